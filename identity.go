package kommander

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
)

// ErrIdentityMismatch is wrapped by NewNode's error when the data directory was created for
// another cluster, node, partition count or member set than the Config asks for. Starting
// anyway could elect a leader of a cluster that does not exist, or route keys to the wrong
// partitions; the error names both values.
var ErrIdentityMismatch = errors.New("kommander: the data directory belongs to another cluster configuration")

// identityFileName is the file in the data directory that holds its clusterIdentity.
const identityFileName = "cluster.json"

// clusterIdentity is what a data directory belongs to. A node writes it at its first start
// and checks it at every later one: these values are replicated state, fixed when the
// cluster formed, not flags an operator may change at a restart.
type clusterIdentity struct {
	// Format is the file's format version.
	Format int `json:"format"`
	// Cluster is Config.ClusterName.
	Cluster string `json:"cluster"`
	// Node is the NodeID whose data this is.
	Node string `json:"node"`
	// Partitions is the partition count; keys are routed by it.
	Partitions int `json:"partitions"`
	// Members are the voters the cluster was bootstrapped with, sorted.
	Members []string `json:"members"`
}

const identityFormat = 1

// String describes the identity as an operator would write it in a Config.
func (id clusterIdentity) String() string {
	return fmt.Sprintf("node %q of cluster %q with %d partitions and members %v", id.Node, id.Cluster, id.Partitions, id.Members)
}

// equal reports whether two identities are the same (Members compared as sets).
func (id clusterIdentity) equal(o clusterIdentity) bool {
	return id.Cluster == o.Cluster && id.Node == o.Node && id.Partitions == o.Partitions &&
		slices.Equal(id.Members, o.Members)
}

// checkIdentity compares the identity stored in dir with want, and stores want when dir
// has none yet (a new data directory). created reports the latter.
func checkIdentity(dir string, want clusterIdentity) (created bool, err error) {
	want.Format = identityFormat
	want.Members = slices.Clone(want.Members)
	slices.Sort(want.Members)
	path := filepath.Join(dir, identityFileName)
	b, err := os.ReadFile(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return true, writeIdentity(dir, want)
	case err != nil:
		return false, fmt.Errorf("kommander: read %s: %w", path, err)
	}
	var have clusterIdentity
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&have); err != nil || have.Format != identityFormat || have.Node == "" || have.Partitions < 1 {
		return false, fmt.Errorf("kommander: %s is damaged or of an unknown format (%v); restore it from a backup, or remove the whole data directory to rejoin as a new member", path, err)
	}
	if !have.equal(want) {
		return false, fmt.Errorf("%w: %s holds the data of %s, but this start is configured as %s; start it with the values it was created with",
			ErrIdentityMismatch, dir, have, want)
	}
	return false, nil
}

// writeIdentity stores id in dir crash-safely: a temporary file, fsynced, renamed over the
// final name, then the directory fsynced, so that a crash leaves either no file or a whole one.
func writeIdentity(dir string, id clusterIdentity) error {
	b, err := json.MarshalIndent(id, "", "  ")
	if err != nil {
		return err
	}
	path := filepath.Join(dir, identityFileName)
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return fmt.Errorf("kommander: write %s: %w", tmp, err)
	}
	_, err = f.Write(append(b, '\n'))
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err == nil {
		err = syncDir(dir)
	}
	if err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("kommander: write %s: %w", path, err)
	}
	return nil
}

package kommander

import (
	"bytes"
	crand "crypto/rand"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
)

// ErrIdentityMismatch is wrapped by NewNode's error when the data directory was created for
// another cluster, node, partition count, member set or replication factor than the Config
// asks for. Starting anyway could elect a leader of a cluster that does not exist, or route
// keys to the wrong partitions; the error names both values.
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
	// ReplicationFactor is Config.ReplicationFactor: with the members and the partition
	// count it fixes which nodes host which partition at bootstrap (placement.go).
	ReplicationFactor int `json:"replication_factor,omitempty"`
	// Incarnation is drawn at random when the data directory is created: it tells this
	// directory apart from any other a node of the same ID ever ran on.
	Incarnation uint64 `json:"incarnation,omitempty"`
	// Peers holds, per member, the incarnation this node first heard it announce
	// (node_incarnation.go). It is state, not identity: equal ignores it.
	Peers map[string]uint64 `json:"peers,omitempty"`
	// Reconfigured is set once this node saw a membership change committed: from then on
	// the configuration in the log is the membership, and Members (the bootstrap set) is
	// no longer checked against the flags. It is state, not identity.
	Reconfigured bool `json:"reconfigured,omitempty"`
	// Book holds the address book's records changed at run time (node_addrbook.go). It
	// is state, not identity.
	Book map[string]bookRecord `json:"book,omitempty"`
}

const identityFormat = 1

// String describes the identity as an operator would write it in a Config.
func (id clusterIdentity) String() string {
	s := fmt.Sprintf("node %q of cluster %q with %d partitions and members %v", id.Node, id.Cluster, id.Partitions, id.Members)
	if id.ReplicationFactor > 0 {
		s += fmt.Sprintf(" and replication factor %d", id.ReplicationFactor)
	}
	return s
}

// equal reports whether two identities are the same (Members compared as sets, and not at
// all once either saw its membership change: the log holds the membership then).
func (id clusterIdentity) equal(o clusterIdentity) bool {
	return id.Cluster == o.Cluster && id.Node == o.Node && id.Partitions == o.Partitions &&
		(id.Reconfigured || o.Reconfigured || slices.Equal(id.Members, o.Members)) && id.ReplicationFactor == o.ReplicationFactor
}

// checkIdentity compares the identity stored in dir with want, and stores want when dir
// has none yet (a new data directory), with want's incarnation or else a new random one.
// It returns the identity as stored; created reports a new one.
func checkIdentity(dir string, want clusterIdentity) (have clusterIdentity, created bool, err error) {
	want.Format = identityFormat
	want.Members = slices.Clone(want.Members)
	slices.Sort(want.Members)
	path := filepath.Join(dir, identityFileName)
	b, err := os.ReadFile(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		if want.Incarnation == 0 {
			if want.Incarnation, err = randomIncarnation(); err != nil {
				return want, false, err
			}
		}
		return want, true, writeIdentity(dir, want)
	case err != nil:
		return have, false, fmt.Errorf("kommander: read %s: %w", path, err)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&have); err != nil || have.Format != identityFormat || have.Node == "" || have.Partitions < 1 {
		return have, false, fmt.Errorf("kommander: %s is damaged or of an unknown format (%v); restore it from a backup", path, err)
	}
	if !have.equal(want) {
		return have, false, fmt.Errorf("%w: %s holds the data of %s, but this start is configured as %s; start it with the values it was created with",
			ErrIdentityMismatch, dir, have, want)
	}
	if have.Incarnation == 0 {
		// Written before incarnations existed: the data is this directory's own, so it
		// gets an incarnation now without counting as new.
		if have.Incarnation, err = randomIncarnation(); err != nil {
			return have, false, err
		}
		if err := writeIdentity(dir, have); err != nil {
			return have, false, err
		}
	}
	return have, false, nil
}

// loadIdentity reads the identity stored in dir; ok is false when there is none.
func loadIdentity(dir string) (id clusterIdentity, ok bool, err error) {
	path := filepath.Join(dir, identityFileName)
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return id, false, nil
	}
	if err == nil {
		dec := json.NewDecoder(bytes.NewReader(b))
		dec.DisallowUnknownFields()
		err = dec.Decode(&id)
	}
	if err != nil {
		return id, false, fmt.Errorf("kommander: read %s: %w", path, err)
	}
	return id, true, nil
}

// randomIncarnation draws a non-zero incarnation.
func randomIncarnation() (uint64, error) {
	var b [8]byte
	for {
		if _, err := crand.Read(b[:]); err != nil {
			return 0, fmt.Errorf("kommander: draw an incarnation: %w", err)
		}
		if v := binary.LittleEndian.Uint64(b[:]); v != 0 {
			return v, nil
		}
	}
}

// writeIdentity stores id in dir crash-safely (writeFileAtomic).
func writeIdentity(dir string, id clusterIdentity) error {
	b, err := json.MarshalIndent(id, "", "  ")
	if err != nil {
		return err
	}
	return writeFileAtomic(dir, identityFileName, b)
}

// writeFileAtomic stores b as file name in dir crash-safely: a temporary file, fsynced,
// renamed over the final name, then the directory fsynced, so that a crash leaves either
// the old file (or none) or the whole new one.
func writeFileAtomic(dir, name string, b []byte) error {
	path := filepath.Join(dir, name)
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

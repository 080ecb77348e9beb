package kommander

import (
	"errors"
	"fmt"
	"slices"
	"testing"
)

// checkBalance checks the placement's promises for one size: each partition has factor
// distinct replicas; each member hosts within one of its fair share of replicas and is the
// first voter of within one of its fair share of partitions.
func checkPlacement(t *testing.T, members []string, partitions, factor int) {
	t.Helper()
	pl := newPlacement(members, partitions, factor)
	want := factor
	if factor == 0 {
		want = len(members)
	}
	hosted, first := map[string]int{}, map[string]int{}
	for p := 0; p < partitions; p++ {
		reps := pl.voters(p)
		if len(reps) != want {
			t.Fatalf("%d members, %d partitions, factor %d: partition %d has %d replicas %v", len(members), partitions, factor, p, len(reps), reps)
		}
		if c := slices.Clone(reps); len(slices.Compact(sortedCopy(c))) != len(reps) {
			t.Fatalf("%d members, %d partitions, factor %d: partition %d has a replica twice: %v", len(members), partitions, factor, p, reps)
		}
		for _, r := range reps {
			if !slices.Contains(members, r) {
				t.Fatalf("partition %d: replica %q is no member", p, r)
			}
			hosted[r]++
			if !pl.hosts(p, r) {
				t.Fatalf("partition %d: hosts(%q) is false for a replica", p, r)
			}
		}
		first[pl.first(p)]++
	}
	within := func(what string, counts map[string]int, total int) {
		lo, hi := total/len(members), (total+len(members)-1)/len(members)
		for _, m := range members {
			if c := counts[m]; c < lo || c > hi {
				t.Fatalf("%d members, %d partitions, factor %d: %s hosts %d %s, fair share is %d..%d (%v)", len(members), partitions, factor, m, c, what, lo, hi, counts)
			}
		}
	}
	within("replicas", hosted, partitions*want)
	if want < len(members) {
		within("first voters", first, partitions)
	}
}

func sortedCopy(s []string) []string { slices.Sort(s); return s }

func TestPlacementSpreadsReplicasAndFirstLeadersWithinOneOfFairShare(t *testing.T) {
	for nodes := 1; nodes <= 16; nodes++ {
		var members []string
		for i := 0; i < nodes; i++ {
			members = append(members, fmt.Sprintf("n%02d", i))
		}
		for _, partitions := range []int{1, 2, 3, 5, 7, 8, 9, 16, 31, 64, 100, 257} {
			for factor := 0; factor <= nodes; factor++ {
				checkPlacement(t, members, partitions, factor)
			}
		}
	}
}

func TestPlacementIsDeterministicAndKeepsTheOldLayoutWithoutAFactor(t *testing.T) {
	members := []string{"a", "b", "c", "d", "e", "f", "g", "h", "i"}
	a, b := newPlacement(members, 64, 3), newPlacement(slices.Clone(members), 64, 3)
	for p := 0; p < 64; p++ {
		if !slices.Equal(a.voters(p), b.voters(p)) {
			t.Fatalf("partition %d: %v then %v", p, a.voters(p), b.voters(p))
		}
	}
	for _, factor := range []int{0, len(members)} {
		pl := newPlacement(members, 4, factor)
		for p := 0; p < 4; p++ {
			if !slices.Equal(pl.voters(p), members) {
				t.Fatalf("factor %d: partition %d has voters %v, want every member in sorted order", factor, p, pl.voters(p))
			}
		}
		if pl.partial() {
			t.Fatalf("factor %d: placement says it is partial", factor)
		}
	}
	if !a.partial() {
		t.Fatal("factor 3 of 9: placement says it is not partial")
	}
}

func TestReplicationFactorIsValidated(t *testing.T) {
	peers := []Peer{{ID: "a", Addr: "a"}, {ID: "b", Addr: "b"}, {ID: "c", Addr: "c"}}
	base := Config{NodeID: "a", Peers: peers, StateMachine: newKVSM(1, false), Storage: NewMemoryStorage(), Addr: "a"}
	for _, tc := range []struct {
		factor int
		ok     bool
	}{{-1, false}, {0, true}, {1, true}, {3, true}, {4, false}} {
		cfg := base
		cfg.ReplicationFactor = tc.factor
		if err := cfg.Validate(); (err == nil) != tc.ok {
			t.Errorf("ReplicationFactor %d: Validate() = %v", tc.factor, err)
		}
	}
	// With a Discovery the cluster forms with BootstrapExpect nodes: the factor is checked
	// against that number.
	cfg := base
	cfg.Peers, cfg.Discovery, cfg.ReplicationFactor, cfg.BootstrapExpect, cfg.DataDir = nil, wrappedDiscovery{StaticDiscovery(peers...)}, 4, 3, t.TempDir()
	if err := cfg.Validate(); !errors.Is(err, ErrInvalidConfig) {
		t.Fatalf("Validate with ReplicationFactor 4 and BootstrapExpect 3: %v", err)
	}
	cfg.ReplicationFactor = 3
	if err := cfg.Validate(); err != nil {
		t.Fatalf("Validate with ReplicationFactor 3 and BootstrapExpect 3: %v", err)
	}
}

// wrappedDiscovery hides a StaticDiscovery from Validate, as any other Discovery is.
type wrappedDiscovery struct{ Discovery }

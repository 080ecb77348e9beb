package kommander

import (
	"fmt"
	"slices"
	"testing"
)

func TestBalanceMoveHandsAPartitionOnlyToANodeLeadingTwoFewer(t *testing.T) {
	all := []string{"a", "b", "c"}
	views := func(leaders string, targets ...string) []partitionLeadView {
		var vs []partitionLeadView
		for _, l := range leaders {
			vs = append(vs, partitionLeadView{leader: string(l), targets: targets})
		}
		return vs
	}
	for _, tc := range []struct {
		name    string
		self    string
		live    []string
		parts   []partitionLeadView
		wantOK  bool
		wantTo  string
		wantIdx int
	}{
		{"balanced", "a", all, views("aabbc", "b", "c"), false, "", 0},
		{"two above the fewest", "a", all, views("aaab", "b", "c"), true, "c", 0},
		{"only one above", "a", all, views("aabc", "b", "c"), false, "", 0},
		{"the fewest is not caught up", "a", all, views("aab", "b"), false, "", 0},
		{"a dead node is no target", "a", []string{"a", "b"}, views("aab", "b", "c"), false, "", 0},
		{"a dead node's partitions count for nobody", "a", []string{"a", "b"}, views("aacc", "b"), true, "b", 0},
		{"ties go to the smaller ID", "a", all, views("aaa", "c", "b"), true, "b", 0},
		{"not leading", "c", all, views("aaab", "a", "b"), false, "", 0},
		{"self not live", "a", []string{"b", "c"}, views("aaab", "b", "c"), false, "", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			i, to, ok := balanceMove(tc.self, tc.live, tc.parts)
			if ok != tc.wantOK || to != tc.wantTo || (ok && i != tc.wantIdx) {
				t.Fatalf("balanceMove = (%d, %q, %v), want (%d, %q, %v)", i, to, ok, tc.wantIdx, tc.wantTo, tc.wantOK)
			}
		})
	}
}

// TestBalancerPolicyConvergesWithinOneOfTheFairShare runs the policy as the nodes would,
// each node making at most one move per round from the same view, from the state after a
// node restarted (it leads nothing) and from everything on one node, and checks that it
// stops with every node within one of its fair share and never moves back and forth.
func TestBalancerPolicyConvergesWithinOneOfTheFairShare(t *testing.T) {
	for _, tc := range []struct {
		nodes, partitions int
		start             func(p int) int // node index leading partition p
	}{
		{3, 32, func(p int) int { return p % 2 }},
		{3, 32, func(p int) int { return 0 }},
		{5, 32, func(p int) int { return p % 3 }},
		{5, 7, func(p int) int { return 0 }},
		{2, 1, func(p int) int { return 0 }},
	} {
		t.Run(fmt.Sprintf("%d nodes %d partitions", tc.nodes, tc.partitions), func(t *testing.T) {
			var ids []string
			for i := 0; i < tc.nodes; i++ {
				ids = append(ids, fmt.Sprintf("n%d", i+1))
			}
			leaders := make([]string, tc.partitions)
			for p := range leaders {
				leaders[p] = ids[tc.start(p)]
			}
			moves := 0
			for round := 0; ; round++ {
				if round > 4*tc.partitions {
					t.Fatalf("no convergence after %d rounds: %v", round, leaderCounts(ids, leaders))
				}
				views := make([]partitionLeadView, tc.partitions)
				for p := range views {
					views[p] = partitionLeadView{leader: leaders[p], targets: ids}
				}
				moved := false
				for _, self := range ids {
					if p, to, ok := balanceMove(self, ids, views); ok {
						leaders[p] = to
						moved = true
						moves++
					}
				}
				if !moved {
					break
				}
			}
			counts := leaderCounts(ids, leaders)
			lo, hi := slices.Min(counts), slices.Max(counts)
			if hi-lo > 1 || lo < tc.partitions/tc.nodes || hi > (tc.partitions+tc.nodes-1)/tc.nodes {
				t.Fatalf("leaders per node %v: not within one of the fair share %d/%d", counts, tc.partitions, tc.nodes)
			}
			t.Logf("leaders per node %v after %d transfers", counts, moves)
		})
	}
}

func leaderCounts(ids, leaders []string) []int {
	counts := make([]int, len(ids))
	for _, l := range leaders {
		counts[slices.Index(ids, l)]++
	}
	return counts
}

package kommander

// placement says which nodes host each partition when Config.ReplicationFactor places
// every partition on a subset of the cluster. It is a pure function of the sorted
// bootstrap members, the partition count and the factor, so that every node computes the
// same table without talking to the others, and a restarted node the same table again.
//
// The construction:
//   - Replica slots are dealt round-robin: slot s = p*factor + j (j < factor) goes to
//     member s mod N. Each member gets floor or ceil of partitions*factor/N slots, and a
//     partition's factor slots are consecutive members, so they are distinct.
//   - The first voter of each partition (the replica that campaigns first at bootstrap, so
//     that leaders start spread) is its replica at offset (p mod N) / (N/g) from the
//     partition's first slot, where g = gcd(factor, N). Within N consecutive partitions the
//     first slots p*factor mod N run N/g times through the multiples of g, and the offset
//     takes each value below g once, so every member is first exactly once per N
//     partitions: each member is first of floor or ceil of partitions/N partitions. The
//     offset is below g <= factor, so the first voter is always one of the replicas.
type placement struct {
	members []string // sorted
	factor  int      // 1..len(members)
	// replicas holds each partition's replicas, first voter first, then the others in
	// slot order.
	replicas [][]string
}

// newPlacement computes the placement of partitions partitions with factor replicas each
// on members (sorted, distinct). A factor of 0, or one at least len(members), places every
// partition on every member, in sorted order (the layout before replication factors). With
// no members it places nothing anywhere.
func newPlacement(members []string, partitions, factor int) placement {
	n := len(members)
	if factor <= 0 || factor > n {
		factor = n
	}
	pl := placement{members: members, factor: factor, replicas: make([][]string, partitions)}
	if n == 0 {
		return pl // no members known yet (a node that has yet to bootstrap): it hosts nothing
	}
	if factor == n {
		// Every member everywhere: the voter order is the sorted one, as it always was.
		for p := range pl.replicas {
			pl.replicas[p] = members
		}
		return pl
	}
	period := n / gcd(factor, n)
	for p := range pl.replicas {
		start := p * factor % n
		lead := (p % n) / period
		reps := make([]string, 0, factor)
		reps = append(reps, members[(start+lead)%n])
		for j := 0; j < factor; j++ {
			if j != lead {
				reps = append(reps, members[(start+j)%n])
			}
		}
		pl.replicas[p] = reps
	}
	return pl
}

func gcd(a, b int) int {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}

// voters returns the bootstrap voters of partition p, first voter first.
func (pl *placement) voters(p int) []string { return pl.replicas[p] }

// hosts reports whether member id hosts partition p at bootstrap.
func (pl *placement) hosts(p int, id string) bool {
	for _, r := range pl.replicas[p] {
		if r == id {
			return true
		}
	}
	return false
}

// first returns the first voter of partition p: the replica meant to lead it first.
func (pl *placement) first(p int) string { return pl.replicas[p][0] }

// partial reports whether some partition is placed on fewer than all members.
func (pl *placement) partial() bool { return pl.factor < len(pl.members) }

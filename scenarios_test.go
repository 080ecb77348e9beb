package kommander

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// The failure-scenario catalog. Every rule kommander must keep when something fails has a
// tag, S1 to S37, and comments and test names cite it by that tag ("S12" in a comment, or
// TestS12Reordered..., TestWALFailedWriteIsStickyS26): a tag found anywhere in the code is
// looked up here. TestScenarioCatalog keeps the catalog and the code in step.

// scenario is one entry of the catalog.
type scenario struct {
	tag  string // "S1".."S37"
	name string
	rule string // what must hold, in one sentence
	// tests are the tests that check the rule: "TestX" for a test of this package,
	// "cmd/kommander:TestX" for one in the package in that directory.
	tests []string
	// pending names the feature that will build the scenario. A pending scenario lists no
	// tests; a built one lists at least one.
	pending string
	// partial says what part of the rule the listed tests do not reach yet, if any.
	partial string
}

var scenarios = []scenario{
	// Elections.
	{
		tag: "S1", name: "durable term and vote",
		rule: "Term and vote survive a crash: a node that restarts never votes twice in one term.",
		tests: []string{
			"TestS1RestartedNodeNeverVotesTwiceInATerm", "TestS1VoteGrantNeverLeavesBeforePersist",
			"TestRaftRestartsFromStorageThroughPartitionLog", "TestSimThreeNodes",
			"TestSimFindsVoteReleasedBeforePersist", "TestSimFindsSelfVoteCountedBeforePersist",
			"TestRestartAllKeepsEveryAcknowledgedEntryAppliedOnce", "TestNodeSimLinearizable",
		},
	},
	{
		tag: "S2", name: "log freshness",
		rule:  "Freshness is (lastLogTerm, lastLogIndex): a longer log from an older term loses.",
		tests: []string{"TestRequestVoteReceiverRejectsCandidateWithStaleLogS2"},
	},
	{
		tag: "S3", name: "gap in the log",
		rule:  "A node with a gap in its log (entries missing below its last index) never wins on the strength of its last index.",
		tests: []string{"TestAppendEntriesReceiverRejectsMissingPrevIndexS3", "TestS3NodeWithGapNeverWinsOnLastIndex"},
	},
	{
		tag: "S4", name: "deposed leader",
		rule: "A RequestVote or append with a higher term deposes a leader at once; followers never keep acknowledging a deposed leader (no phantom quorum).",
		tests: []string{
			"TestAllServersStepDownOnHigherTermS4", "TestAppendEntriesReceiverRejectsStaleTerm",
			"TestS4DeposedLeaderGetsNoAcknowledgements",
		},
	},
	{
		tag: "S5", name: "non-members have no say",
		rule:  "A removed or never-admitted node cannot win an election, force one, or send appends or snapshots that anyone accepts; learners never vote.",
		tests: []string{"TestTransportConformanceHostileInput"},
		partial: "only the transport's refusal of a batch that speaks for another node is tested; " +
			"the Raft core ignores messages from non-members, but no test checks that directly; " +
			"removed nodes and learners come with membership changes (S27)",
	},
	{
		tag: "S6", name: "PreVote",
		rule:  "PreVote: a node with a live leader refuses a pre-vote; pre-vote grants are never counted as votes; a node returning from a partition does not disrupt a healthy leader.",
		tests: []string{"TestS6PreVoteProtectsHealthyLeader", "TestS6PreVoteGrantChangesNothingAndIsNotAVote"},
	},
	{
		tag: "S7", name: "no split-vote livelock",
		rule:  "Randomized timeouts per node and per partition; 5 nodes starting at the same instant elect a leader within a bounded number of rounds.",
		tests: []string{"TestS7FiveNodesStartingTogetherElectQuickly", "TestFollowerStartsElectionAfterRandomizedTimeout"},
	},
	{
		tag: "S8", name: "timers that cannot work",
		rule:  "Configured timers that cannot work (heartbeat >= election timeout) are rejected by Validate with a clear message.",
		tests: []string{"TestValidateRejectsTimersThatCannotWork", "ExampleConfig_Validate"},
	},
	{
		tag: "S9", name: "independent partition timers",
		rule:  "Traffic on one partition never resets the election timer of another.",
		tests: []string{"TestS9TrafficOnOnePartitionDoesNotResetAnother"},
	},
	{
		tag: "S10", name: "wall-clock jumps",
		rule:  "Wall-clock jumps (forward or back) never freeze failover: timers use the monotonic clock or ticks.",
		tests: []string{"TestS10RaftCoreCountsTicksAndReadsNoClock", "TestFollowerStartsElectionAfterRandomizedTimeout"},
		partial: "no test moves the wall clock: the tests check that the Raft core counts ticks " +
			"and cannot read a clock; the node's tickers measure monotonic time",
	},

	// Replication and commit.
	{
		tag: "S11", name: "Figure 8",
		rule: "A leader commits by counting only entries of its current term; an entry from an older term is committed only through a newer one.",
		tests: []string{
			"TestLeaderCommitsOnlyCurrentTermEntriesByCountingS11", "TestSimThreeNodes",
			"TestSimFindsCommitOfOlderTermByCounting",
		},
	},
	{
		tag: "S12", name: "reordered and duplicated appends",
		rule: "Appends that arrive reordered, duplicated or delayed never create a hole, never truncate a committed entry, and never apply an entry twice.",
		tests: []string{
			"TestAppendEntriesReceiverAppendsOnlyNewEntriesS12", "TestS12ReorderedDuplicatedAppendsAreHarmless",
			"TestSimThreeNodes", "TestDuplicatedForwardedProposalAppliesOnceS12",
			"TestConcurrentReplicateAppliesEachAcknowledgedEntryOnceInOneOrder", "TestNodeSimLinearizable",
			"cmd/kommander:TestNodeProcesses",
		},
	},
	{
		tag: "S13", name: "stale responses and fast back-off",
		rule: "Stale responses (older term, or older than a newer one already seen) never move a follower's match index; a rejection carries a hint that lets the leader skip back fast.",
		tests: []string{
			"TestAppendEntriesReceiverRejectsPrevTermMismatchWithHint",
			"TestLeaderSkipsConflictingTermInOneRoundTripS13", "TestLeaderIgnoresStaleResponsesS13",
		},
	},
	{
		tag: "S14", name: "lost proposals",
		rule: "A proposal whose message was lost is retried until it commits or the caller gets a definite error; nothing is wedged one index below a durable entry.",
		tests: []string{
			"TestNodeSimLinearizable", "TestProposalForwardedToAFollowerIsPassedOnToTheLeader",
			"TestForwardedProposalRefusedByLeaderFailsFast", "cmd/kommander:TestNodeProcesses",
		},
	},
	{
		tag: "S15", name: "one entry per index",
		rule: "Two different entries are never acknowledged for the same (partition, index); a new leader never reissues an index that an older leader acknowledged.",
		tests: []string{
			"TestS15NewLeaderNeverReissuesCommittedIndex", "TestSimThreeNodes", "TestNodeSimLinearizable",
			"cmd/kommander:TestNodeProcesses",
		},
	},
	{
		tag: "S16", name: "commits reach every follower",
		rule: "Committed entries are always delivered to every live follower's state machine, even when writes stop right after the commit (no entries stuck behind a missing trigger).",
		tests: []string{
			"TestCommittedEntriesReachEveryFollowerWithoutFurtherWrites", "TestLeaderTellsLateFollowerTheCommitOnItsAck",
			"TestConcurrentReplicateAppliesEachAcknowledgedEntryOnceInOneOrder", "TestNodeSimLinearizable",
		},
	},
	{
		tag: "S17", name: "apply order",
		rule: "Apply order is the log order, with no gaps, on leader and followers alike, also when fsyncs of later batches finish first.",
		tests: []string{
			"TestAllServersApplyCommittedEntriesInOrderOnceDurableS17", "TestS17ApplyOrderIsLogOrderEverywhere",
			"TestSimThreeNodes", "TestReplicateFromAnyNodeAppliesEverywhereInOneOrder",
			"TestConcurrentReplicateAppliesEachAcknowledgedEntryOnceInOneOrder", "TestNodeSimLinearizable",
		},
	},
	{
		tag: "S18", name: "leader without a quorum",
		rule: "A leader whose quorum is gone (CheckQuorum) steps down; its callers get an error, not a hang, and the outcome is reported as unknown where it is unknown.",
		tests: []string{
			"TestLeaderStepsDownWithoutQuorumCheckQuorum", "TestIsolatedLeaderStepsDownAndCallersGetAnswer",
			"TestIsolatedLeaderUnderLoadStepsDownS18", "TestStoppedLeaderIsReplacedAndItsCallersAnswered",
			"TestNodeSimLinearizable", "cmd/kommander:TestNodeProcessesIsolatedLeaderS18",
		},
	},
	{
		tag: "S19", name: "paused leader",
		rule:  "A paused leader (SIGSTOP) that resumes after a new leader exists steps down, and every caller waiting on it gets an answer.",
		tests: []string{"TestNodeSimLinearizable", "cmd/kommander:TestNodeProcesses"},
	},

	// Snapshots and compaction.
	{
		tag: "S20", name: "catch-up by snapshot",
		rule:    "A follower whose next entry was compacted away is caught up with a snapshot, and its next index moves past the snapshot afterwards (no snapshot loop).",
		pending: "snapshots",
	},
	{
		tag: "S21", name: "untrusted snapshot chunks",
		rule:    "A snapshot chunk from a deposed leader is rejected; a truncated or corrupt snapshot is detected by its checksum and never installed; a receiver buffers a bounded amount.",
		pending: "snapshots",
	},
	{
		tag: "S22", name: "restart equals the state before",
		rule: "After restart from snapshot + log, the state equals the state before the crash.",
		tests: []string{
			"TestRaftRestartsFromStorageThroughPartitionLog", "TestRestartAllKeepsEveryAcknowledgedEntryAppliedOnce",
			"TestNodeSimLinearizable",
		},
		partial: "restart from the log alone; restart from a snapshot comes with snapshots",
	},
	{
		tag: "S23", name: "bounded disk",
		rule:  "Disk use stays bounded under an endless stream of writes once snapshots are taken.",
		tests: []string{"TestWALDiskStaysBoundedUnderEndlessWritesS23"},
		partial: "the WAL's half: compacting as snapshots would keeps its disk use bounded; " +
			"nothing compacts a node's log until snapshots are built, so a node's disk still grows",
	},

	// Storage.
	{
		tag: "S24", name: "torn tail",
		rule: "A crash at any byte of a WAL write loses at most the batch being written, which no caller was acknowledged for; reopening never fails on a torn tail.",
		tests: []string{
			"TestWALCrashAtEveryByteOfTheTailS24", "TestWALCrashWhileCreatingASegmentS24",
			"TestWALCrashBetweenCarryAndRemovalS24", "TestWALTornLastFrameWithHolesS24",
			"TestWALZeroesAheadOnlyInTheLastSegment", "cmd/kommander:TestNodeProcesses",
			"cmd/kommander:TestNodeProcessDiskFailureS26",
		},
	},
	{
		tag: "S25", name: "corruption before the tail",
		rule: "A flipped bit before the tail is reported as corruption with file and offset.",
		tests: []string{
			"TestWALFlippedBitBeforeTheTailIsCorruptionS25", "TestWALMissingSegmentIsCorruptionS25",
			"TestWALMissingOldestSegmentIsCorruptionS25",
		},
	},
	{
		tag: "S26", name: "failed write or fsync",
		rule: "A failed write or fsync is never reported as success, and the node stops accepting writes rather than continue with a log it cannot trust.",
		tests: []string{
			"TestWALFailedWriteIsStickyS26", "TestWALFullDiskWhileStartingASegmentIsReportedS26",
			"TestWALReadErrorsAreReportedNotRepaired", "TestMemoryStorageFailedSaveIsSticky",
			"TestFailedSaveStopsWrites", "TestCallersAreAnsweredWhenSavesFailS26",
			"TestStorageReadErrorFailsTheNodeS26", "cmd/kommander:TestNodeProcessDiskFailureS26",
		},
	},

	// Membership and transport.
	{
		tag: "S27", name: "membership changes",
		rule:    "One membership change at a time; a new node catches up as a learner before it votes; a removed leader steps down; the last voter cannot be removed.",
		pending: "membership changes",
	},
	{
		tag: "S28", name: "dead connections and malformed messages",
		rule: "A dead connection is detected and replaced; one malformed message in a batch is rejected without dropping the rest of the connection's traffic or panicking.",
		tests: []string{
			"TestTransportConformanceReplacesDeadConnection", "TestTransportConformanceHostileInput",
			"TestDecodeSkipsOneMalformedMessageAndKeepsTheRest", "FuzzDecodeBatch",
		},
	},
	{
		tag: "S29", name: "slow peers",
		rule:  "A peer that is slow or gone never blocks the node loop or the other peers.",
		tests: []string{"TestTransportConformanceSlowPeerNeverBlocksSendOrOthers"},
	},
	{
		tag: "S30", name: "node ID used twice",
		rule: "A node ID used by two processes is detected and reported, not crashed on.",
		tests: []string{
			"TestTransportConformanceHostileInput", "TestTCPReconnectOfSameProcessReplacesItsOldConnection",
			"TestTransportConformanceReconnectsAfterPeerRestarts", "cmd/kommander:TestNodeProcesses",
		},
	},

	// Hostile peers and operators.
	{
		tag: "S31", name: "messages whose fields lie",
		rule:    "A message whose fields lie (an index past the log, a hint past the index, a commit beyond what was sent, a term from the future with a stale log) is refused or bounded; the core never panics and never moves next, match or commit outside what it can prove.",
		pending: "hardening: every message field checked against what the receiver can prove",
	},
	{
		tag: "S32", name: "impersonated peers",
		rule:    "A connection claiming a live peer's ID, on any lane or transport, is refused; an ID that is not a current member is refused before any frame is read; any number of hostile connections costs bounded memory.",
		pending: "hardening: peer identity checked on every lane and transport",
	},
	{
		tag: "S33", name: "data directory in use",
		rule:    "A second process pointed at a live data directory exits at once and touches nothing.",
		pending: "hardening: a lock on the data directory",
	},
	{
		tag: "S34", name: "wrong cluster shape at restart",
		rule:    "A node restarted with a different member list, partition count or cluster name refuses to start; it never elects itself alone or accepts writes for the wrong partition.",
		pending: "hardening: the cluster's shape recorded in the data directory and checked at start",
	},
	{
		tag: "S35", name: "entry IDs across restarts",
		rule:    "A restarted node never reuses an entry ID of its previous life; a proposal delivered twice, even after the leader restarted, is applied once.",
		pending: "hardening: entry IDs unique across a node's lives",
	},
	{
		tag: "S36", name: "wiped disk",
		rule:    "A node that lost its data (wiped disk) never votes in a term it may already have voted in; it rejoins as a new member, and the leader notices its log is shorter than it believed.",
		pending: "hardening: detecting a node that lost its data (its rejoin needs membership changes)",
	},
	{
		tag: "S37", name: "unsaved candidacy",
		rule:    "A candidate that crashed before saving its term and vote, and campaigns again in the same term, never counts grants given against entries it did not save.",
		pending: "hardening: votes tied to the candidacy that asked for them",
	},
}

// TestScenarioCatalog keeps the catalog and the code in step: every tag the code cites is
// in the catalog, every test the catalog names exists, and an entry is either pending
// with no tests or built with at least one.
func TestScenarioCatalog(t *testing.T) {
	listed := map[string]bool{}
	for i, s := range scenarios {
		if want := "S" + strconv.Itoa(i+1); s.tag != want {
			t.Errorf("entry %d has tag %q, want %q (the catalog runs S1, S2, ... in order)", i, s.tag, want)
		}
		listed[s.tag] = true
		if s.name == "" || s.rule == "" {
			t.Errorf("%s: name and rule must be set", s.tag)
		}
		switch {
		case s.pending != "" && len(s.tests) > 0:
			t.Errorf("%s is pending (%s) but lists tests %v: drop pending once it is built", s.tag, s.pending, s.tests)
		case s.pending == "" && len(s.tests) == 0:
			t.Errorf("%s lists no test: name the tests that check it, or mark it pending with the feature that will build it", s.tag)
		case s.pending != "" && s.partial != "":
			t.Errorf("%s is pending; partial is for built entries", s.tag)
		}
	}

	pkgs := goPackageDirs(t)
	for _, dir := range pkgs {
		for _, c := range citedTags(t, dir) {
			if !listed[c.tag] {
				t.Errorf("%s cites scenario %s, which is not in the catalog (scenarios_test.go)", c.pos, c.tag)
			}
		}
	}

	tests := map[string]map[string]bool{} // package dir -> names of its test functions
	for _, s := range scenarios {
		for _, name := range s.tests {
			dir, fn := ".", name
			if d, f, ok := strings.Cut(name, ":"); ok {
				dir, fn = filepath.FromSlash(d), f
			}
			if !slices.Contains(pkgs, dir) {
				t.Errorf("%s lists %s, but %s is not a package of this module", s.tag, name, dir)
				continue
			}
			if tests[dir] == nil {
				tests[dir] = testFuncs(t, dir)
			}
			if !tests[dir][fn] {
				t.Errorf("%s lists %s, but no _test.go file in %s declares func %s", s.tag, name, dir, fn)
			}
		}
	}
}

// TestS10RaftCoreCountsTicksAndReadsNoClock: the Raft core (raft*.go) cannot read a clock,
// so its election and heartbeat timers are counts of the ticks the node hands it, and a
// wall-clock jump cannot move them.
func TestS10RaftCoreCountsTicksAndReadsNoClock(t *testing.T) {
	files, err := filepath.Glob("raft*.go")
	if err != nil {
		t.Fatal(err)
	}
	core := 0
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		core++
		f, err := parser.ParseFile(token.NewFileSet(), name, nil, parser.ImportsOnly)
		if err != nil {
			t.Fatal(err)
		}
		for _, imp := range f.Imports {
			if p, _ := strconv.Unquote(imp.Path.Value); p == "time" {
				t.Errorf("%s imports time: the Raft core must count ticks, never read a clock", name)
			}
		}
	}
	if core == 0 {
		t.Fatal("no raft*.go file found: the test no longer sees the Raft core")
	}
}

// goPackageDirs returns the directories of the module that hold .go files, relative to
// the module root ("." for the root package), leaving out testdata and hidden directories.
func goPackageDirs(t *testing.T) []string {
	t.Helper()
	seen := map[string]bool{}
	var dirs []string
	err := filepath.WalkDir(".", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if path != "." && (d.Name() == "testdata" || strings.HasPrefix(d.Name(), ".") || strings.HasPrefix(d.Name(), "_")) {
				return filepath.SkipDir
			}
			return nil
		}
		if dir := filepath.Dir(path); strings.HasSuffix(path, ".go") && !seen[dir] {
			seen[dir] = true
			dirs = append(dirs, dir)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if !seen["."] || len(dirs) < 2 {
		t.Fatalf("found Go packages in %v; want the root package and cmd/kommander at least", dirs)
	}
	return dirs
}

// parseDir parses every .go file in dir (tests included) with its comments.
func parseDir(t *testing.T, dir string) (*token.FileSet, []*ast.File) {
	t.Helper()
	names, err := filepath.Glob(filepath.Join(dir, "*.go"))
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	var files []*ast.File
	for _, name := range names {
		f, err := parser.ParseFile(fset, name, nil, parser.ParseComments|parser.SkipObjectResolution)
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, f)
	}
	return fset, files
}

// citation is one place that cites a scenario tag.
type citation struct {
	tag string
	pos token.Position
}

// citedTags returns the scenario tags cited in the comments, function names and string
// literals (subtest names, failure messages) of the .go files in dir.
func citedTags(t *testing.T, dir string) []citation {
	t.Helper()
	fset, files := parseDir(t, dir)
	var cites []citation
	add := func(pos token.Pos, text string) {
		for _, tag := range scenarioTags(text) {
			cites = append(cites, citation{tag, fset.Position(pos)})
		}
	}
	for _, f := range files {
		for _, g := range f.Comments {
			for _, c := range g.List {
				add(c.Pos(), c.Text)
			}
		}
		ast.Inspect(f, func(n ast.Node) bool {
			switch n := n.(type) {
			case *ast.FuncDecl:
				add(n.Name.Pos(), n.Name.Name)
			case *ast.BasicLit:
				if n.Kind == token.STRING {
					add(n.Pos(), n.Value)
				}
			}
			return true
		})
	}
	return cites
}

// scenarioTags finds the tags in text: an S and digits, not preceded by a capital letter
// and not followed by a lower-case letter. That finds every `\bS[0-9]+\b` of prose, and
// also the tags inside identifiers and subtest names (TestS1Restarted,
// TestWALCrashAtEveryByteOfTheTailS24, "S12S15AppendsAcrossALeaderKill"), but not
// TLS13 or HTTPS2.
func scenarioTags(text string) []string {
	var tags []string
	for i := 0; i < len(text); i++ {
		if text[i] != 'S' || (i > 0 && 'A' <= text[i-1] && text[i-1] <= 'Z') {
			continue
		}
		j := i + 1
		for j < len(text) && '0' <= text[j] && text[j] <= '9' {
			j++
		}
		if j == i+1 || (j < len(text) && 'a' <= text[j] && text[j] <= 'z') {
			continue
		}
		tags = append(tags, text[i:j])
		i = j - 1
	}
	return tags
}

// testFuncs returns the names of the functions (not methods) that the _test.go files in
// dir declare.
func testFuncs(t *testing.T, dir string) map[string]bool {
	t.Helper()
	fset, files := parseDir(t, dir)
	names := map[string]bool{}
	for _, f := range files {
		if !strings.HasSuffix(fset.File(f.Pos()).Name(), "_test.go") {
			continue
		}
		for _, d := range f.Decls {
			if fn, ok := d.(*ast.FuncDecl); ok && fn.Recv == nil {
				names[fn.Name.Name] = true
			}
		}
	}
	return names
}

package kommander

import (
	"fmt"
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

// scenarioCatalog is the catalog, one scenario a paragraph under its heading: the tag
// and a short name; the rule, one sentence, indented; then "tests:" and the tests that
// check the rule ("TestX" in this package, "cmd/kommander:TestX" in the package in that
// directory), or "pending:" and the feature that will build the scenario; "partial:" says
// what part of a built scenario's rule its tests do not reach yet. The rule may go on over
// several lines; a field goes on over lines indented once more.
const scenarioCatalog = `
# Elections

S1 durable term and vote
	Term and vote survive a crash: a node that restarts never votes twice in one term.
	tests: TestS1RestartedNodeNeverVotesTwiceInATerm TestS1VoteGrantNeverLeavesBeforePersist
		TestRaftRestartsFromStorageThroughPartitionLog TestSimThreeNodes
		TestSimFindsVoteReleasedBeforePersist TestSimFindsSelfVoteCountedBeforePersist
		TestRestartAllKeepsEveryAcknowledgedEntryAppliedOnce TestNodeSimLinearizable

S2 log freshness
	Freshness is (lastLogTerm, lastLogIndex): a longer log from an older term loses.
	tests: TestRequestVoteReceiverRejectsCandidateWithStaleLogS2

S3 gap in the log
	A node with a gap in its log (entries missing below its last index) never wins on the
	strength of its last index.
	tests: TestAppendEntriesReceiverRejectsMissingPrevIndexS3
		TestS3NodeWithGapNeverWinsOnLastIndex

S4 deposed leader
	A RequestVote or append with a higher term deposes a leader at once; followers never
	keep acknowledging a deposed leader (no phantom quorum).
	tests: TestAllServersStepDownOnHigherTermS4 TestAppendEntriesReceiverRejectsStaleTerm
		TestS4DeposedLeaderGetsNoAcknowledgements

S5 non-members have no say
	A node that is not a voter (unless its removal is not committed yet) never campaigns,
	and its vote never counts (learners included); a removed node's vote requests are dropped, without moving anyone's term,
	once its log is behind; only the leader a node follows in its term can make it
	campaign at once.
	tests: TestTransportConformanceHostileInput TestConfVoteRequestsFromNonVotersAreIgnoredS5
		TestConfLearnerNeverCountsNorCampaignsS27 TestTimeoutNowOnlyFromTheLeaderOfOurTermS31
		TestConfEmptyReplicaFollowsTheLeaderThatAddsItS27 TestConfReplicaWithoutConfigurationNeverVotesS5
		TestSimFindsLearnerVotesCounted TestRemovedNodeIsRefused
		TestTransportConformanceRemovedPeerIsRefused TestOnlyALeaderReplicatingCreatesAReplica

S6 PreVote
	PreVote: a node with a live leader refuses a pre-vote; pre-vote grants are never counted
	as votes; a node returning from a partition does not disrupt a healthy leader.
	tests: TestS6PreVoteProtectsHealthyLeader TestS6PreVoteGrantChangesNothingAndIsNotAVote

S7 no split-vote livelock
	Randomized timeouts per node and per partition; 5 nodes starting at the same instant
	elect a leader within a bounded number of rounds.
	tests: TestS7FiveNodesStartingTogetherElectQuickly
		TestFollowerStartsElectionAfterRandomizedTimeout

S8 timers that cannot work
	Configured timers that cannot work (heartbeat >= election timeout) are rejected by
	Validate with a clear message.
	tests: TestValidateRejectsTimersThatCannotWork ExampleConfig_Validate

S9 independent partition timers
	Traffic on one partition never resets the election timer of another.
	tests: TestS9TrafficOnOnePartitionDoesNotResetAnother

S10 wall-clock jumps
	Wall-clock jumps (forward or back) never freeze failover: timers use the monotonic clock
	or ticks.
	tests: TestS10RaftCoreCountsTicksAndReadsNoClock
		TestFollowerStartsElectionAfterRandomizedTimeout
	partial: no test moves the wall clock: the tests check that the Raft core counts ticks and
		cannot read a clock; the node's tickers measure monotonic time

# Replication and commit

S11 Figure 8
	A leader commits by counting only entries of its current term; an entry from an older
	term is committed only through a newer one.
	tests: TestLeaderCommitsOnlyCurrentTermEntriesByCountingS11 TestSimThreeNodes
		TestSimFindsCommitOfOlderTermByCounting

S12 reordered and duplicated appends
	Appends that arrive reordered, duplicated or delayed never create a hole, never truncate
	a committed entry, and never apply an entry twice.
	tests: TestAppendEntriesReceiverAppendsOnlyNewEntriesS12
		TestS12ReorderedDuplicatedAppendsAreHarmless TestSimThreeNodes
		TestDuplicatedForwardedProposalAppliesOnceS12
		TestConcurrentReplicateAppliesEachAcknowledgedEntryOnceInOneOrder
		TestNodeSimLinearizable cmd/kommander:TestNodeProcesses

S13 stale responses and fast back-off
	Stale responses (older term, or older than a newer one already seen) never move a
	follower's match index; a rejection carries a hint that lets the leader skip back fast.
	tests: TestAppendEntriesReceiverRejectsPrevTermMismatchWithHint
		TestLeaderSkipsConflictingTermInOneRoundTripS13 TestLeaderIgnoresStaleResponsesS13

S14 lost proposals
	A proposal whose message was lost is retried until it commits or the caller gets a
	definite error; nothing is wedged one index below a durable entry.
	tests: TestNodeSimLinearizable TestForwardedProposalRefusedByLeaderFailsFast
		cmd/kommander:TestNodeProcesses

S15 one entry per index
	Two different entries are never acknowledged for the same (partition, index); a new
	leader never reissues an index that an older leader acknowledged.
	tests: TestS15NewLeaderNeverReissuesCommittedIndex TestSimThreeNodes
		TestNodeSimLinearizable cmd/kommander:TestNodeProcesses

S16 commits reach every follower
	Committed entries are always delivered to every live follower's state machine, even when
	writes stop right after the commit (no entries stuck behind a missing trigger).
	tests: TestCommittedEntriesReachEveryFollowerWithoutFurtherWrites
		TestLeaderTellsLateFollowerTheCommitOnItsAck
		TestConcurrentReplicateAppliesEachAcknowledgedEntryOnceInOneOrder
		TestNodeSimLinearizable

S17 apply order
	Apply order is the log order, with no gaps, on leader and followers alike, also when
	fsyncs of later batches finish first.
	tests: TestAllServersApplyCommittedEntriesInOrderOnceDurableS17
		TestS17ApplyOrderIsLogOrderEverywhere TestSimThreeNodes
		TestReplicateFromAnyNodeAppliesEverywhereInOneOrder
		TestConcurrentReplicateAppliesEachAcknowledgedEntryOnceInOneOrder
		TestNodeSimLinearizable

S18 leader without a quorum
	A leader whose quorum is gone (CheckQuorum) steps down; its callers get an error, not a
	hang, and the outcome is reported as unknown where it is unknown.
	tests: TestLeaderStepsDownWithoutQuorumCheckQuorum
		TestIsolatedLeaderStepsDownAndCallersGetAnswer
		TestIsolatedLeaderUnderLoadStepsDownS18
		TestStoppedLeaderIsReplacedAndItsCallersAnswered TestNodeSimLinearizable
		cmd/kommander:TestNodeProcessesIsolatedLeaderS18

S19 paused leader
	A paused leader (SIGSTOP) that resumes after a new leader exists steps down, and every
	caller waiting on it gets an answer.
	tests: TestNodeSimLinearizable cmd/kommander:TestNodeProcesses

# Snapshots and compaction

S20 catch-up by snapshot
	A follower whose next entry was compacted away is caught up with a snapshot, and its
	next index moves past the snapshot afterwards (no snapshot loop).
	tests: TestRaftSendsSnapshotToFollowerBehindCompactionS20
		TestRaftSnapshotInstallDiscardsConflictingSuffixS20 TestRaftAbandonedSnapshotIsAskedForAgain
		TestNodeFollowerRejoinsBySnapshotS20 TestSimThreeNodes TestSimFiveNodes
		TestNodeSnapshotCatchUpOverRealTransportsS20
		cmd/kommander:TestNodeProcessSnapshotsSurviveKills

S21 untrusted snapshot chunks
	A snapshot chunk from a deposed leader is rejected; a truncated or corrupt snapshot is
	detected by its checksum and never installed; a receiver buffers a bounded amount.
	tests: TestSnapshotFileDamageIsDetectedS21 TestSnapshotStoreRefusesDamagedFilesS21
		TestNodeRefusesCorruptOrStaleSnapshotChunksS21 TestNodeRestartFallsBackFromDamagedSnapshotS21
		TestRaftSnapshotFromDeposedLeaderIsIgnoredS21

S22 restart equals the state before
	After restart from snapshot + log, the state equals the state before the crash.
	tests: TestRaftRestartsFromStorageThroughPartitionLog
		TestRestartAllKeepsEveryAcknowledgedEntryAppliedOnce TestNodeSimLinearizable
		TestNodeSnapshotOnDemandAndRestartFromItS22 TestRaftSnapshotOlderThanCommitIsIgnoredS22
		TestNodeRestartFallsBackFromDamagedSnapshotS21 cmd/kommander:TestNodeProcessSnapshotsSurviveKills

S23 bounded disk
	Disk use stays bounded under an endless stream of writes once snapshots are taken,
	also when snapshots take longer to write than the writes take to fill an interval.
	tests: TestWALDiskStaysBoundedUnderEndlessWritesS23 TestNodeDiskStaysBoundedWithSnapshotsS23
		TestNodeWritesWaitForSnapshotsThatFallBehindS23

# Storage

S24 torn tail
	A crash at any byte of a WAL write loses at most the batch being written, which no
	caller was acknowledged for; reopening never fails on a torn tail.
	tests: TestWALCrashAtEveryByteOfTheTailS24 TestWALCrashWhileCreatingASegmentS24
		TestWALCrashBetweenCarryAndRemovalS24 TestWALTornLastFrameWithHolesS24
		TestWALZeroesAheadOnlyInTheLastSegment cmd/kommander:TestNodeProcesses
		cmd/kommander:TestNodeProcessDiskFailureS26

S25 corruption before the tail
	A flipped bit before the tail is reported as corruption with file and offset.
	tests: TestWALFlippedBitBeforeTheTailIsCorruptionS25 TestWALMissingSegmentIsCorruptionS25
		TestWALMissingOldestSegmentIsCorruptionS25

S26 failed write or fsync
	A failed write or fsync is never reported as success, and the node stops accepting
	writes rather than continue with a log it cannot trust.
	tests: TestWALFailedWriteIsStickyS26 TestWALFullDiskWhileStartingASegmentIsReportedS26
		TestWALReadErrorsAreReportedNotRepaired TestMemoryStorageFailedSaveIsSticky
		TestFailedSaveStopsWrites TestCallersAreAnsweredWhenSavesFailS26
		TestStorageReadErrorFailsTheNodeS26 cmd/kommander:TestNodeProcessDiskFailureS26

# Membership and transport

S27 membership changes
	One membership change at a time; a new node catches up as a learner before it votes; a
	removed leader steps down; the last voter cannot be removed.
	tests: TestConfLearnerJoinsThenIsPromotedS27 TestConfPromotionOnlyOfCaughtUpLearnerS27
		TestConfOneChangeInFlightS27 TestConfRemoveLastVoterIsRefusedS27
		TestConfTakesEffectWhenAppendedAndRevertsOnTruncationS27
		TestConfRemovedLeaderStepsDownOnceCommittedS27 TestConfRecoveredAtRestartS27
		TestConfSnapshotCarriesVotersAndLearnersS27 TestConfVoteFromAVoterWeDoNotKnowOfIsGrantedS27
		TestConfNodeHoldingItsUncommittedRemovalStillCampaignsS27 TestNodeSnapshotCarriesTheConfigurationS27
		TestSnapshotFileCarriesLearnersAndReadsVersion1S27 TestSimMembershipThreeNodes
		TestSimMembershipFiveNodes TestSimFindsTwoConfChangesInFlight TestSimFindsLearnerVotesCounted
		TestGrowThreeToFiveAndShrinkBackUnderWriteLoad TestReplaceANodeByANewOne
		TestForgedMembershipChangesChangeNothing cmd/kommander:TestNodeProcessReplacesAMemberThroughTheAdminAPI
		TestReplicaMovesByAddingThenRemoving TestReplicaMovesThroughTheMembershipAPI

S28 dead connections and malformed messages
	A dead connection is detected and replaced; one malformed message in a batch is rejected
	without dropping the rest of the connection's traffic or panicking.
	tests: TestTransportConformanceReplacesDeadConnection TestTransportConformanceHostileInput
		TestDecodeSkipsOneMalformedMessageAndKeepsTheRest FuzzDecodeBatch

S29 slow peers
	A peer that is slow or gone never blocks the node loop or the other peers.
	tests: TestTransportConformanceSlowPeerNeverBlocksSendOrOthers

S30 node ID used twice
	A node ID used by two processes is detected and reported, not crashed on.
	tests: TestTransportConformanceHostileInput
		TestTCPReconnectOfSameProcessReplacesItsOldConnection
		TestTransportConformanceReconnectsAfterPeerRestarts cmd/kommander:TestNodeProcesses

# Hostile peers and operators

S31 messages whose fields lie
	A message whose fields lie (an index past the log, a hint past the index, a commit
	beyond what was sent, a term from the future with a stale log) is refused or bounded;
	the core never panics and never moves next, match or commit outside what it can prove.
	tests: TestLeaderIgnoresRejectionOfAnAppendItNeverSentS31
		TestLeaderTakesNoAcknowledgementPastWhatItSentS31
		TestFollowerCommitsOnHeartbeatOnlyWhatAnAppendProvedS31
		TestLeaderAnswersRefusedHeartbeatCommitWithAnAppendS31
		TestAppendEntriesReceiverRefusesAppendsNoLeaderSendsS31
		TestStepRefusesTermAtTheTopOfTheRangeS31 TestRequestVoteReceiverRefusesImpossibleLastEntryS31
		TestStepRefusesTypesTheCoreDoesNotHandleS31 TestNoElectionAtTheTopOfTheTermRangeS31
		TestStepRefusesImpossibleReadMessagesS31 FuzzRaftStep

S32 impersonated peers
	A connection claiming a live peer's ID, on any lane or transport, is refused; an ID that
	is not a current member is refused before any frame is read; any number of hostile
	connections costs bounded memory.
	tests: TestTransportConformanceSecondClaimantOfALivePeerIsRefused
		TestTransportConformanceStrangersAreRefusedBeforeAnyFrame
		TestTransportConformanceInboundBuffersStayWithinTheirBound
		TestHTTPChecksTheSignatureBeforeReadingTheBody TestInboundBudgetReadGrowsOnlyAsBytesArrive
		TestTransportConformanceRefusalsAreRateLimited

S33 data directory in use
	A second process pointed at a live data directory exits at once and touches nothing.
	tests: TestDataDirLockKeepsASecondOpenerOut cmd/kommander:TestNodeProcesses

S34 wrong cluster shape at restart
	A node restarted with a different member list, partition count, replication factor or
	cluster name refuses to start; it never elects itself alone or accepts writes for the wrong partition.
	tests: TestIdentityIsWrittenOnceAndCheckedAfter TestDamagedIdentityIsAnError
		TestRestartWithAnotherReplicationFactorIsRefused cmd/kommander:TestNodeProcesses

S35 entry IDs across restarts
	A restarted node never reuses an entry ID of its previous life; a proposal delivered
	twice, even after the leader restarted, is applied once; a forward lost with its leader
	is sent again only once it can no longer be applied.
	tests: TestRestartedNodeNeverReusesEntryIDs
		TestForwardedProposalIsTakenOnceByTheLeaderOfItsTerm
		TestALeaderThatSteppedDownAsksForItsForwardsAgain
		TestForwardLostWithItsLeaderGoesToTheNextOne TestForwardTakenIntoASnapshotIsNotSentAgain

S36 wiped disk
	A node that lost its data (wiped disk) never votes in a term it may already have voted
	in; it rejoins as a new member, and the leader notices its log is shorter than it
	believed.
	tests: TestLeaderProbesFollowerThatReportsALogShorterThanItsMatchS36
		TestLeaderProbesFollowerThatRejectsAnIndexItAcknowledgedS36
		TestFollowerWithWipedDataCatchesUpS36 TestLeaderTakesNoAcknowledgementOfALostLogS36
		TestLeaderTakesNoStaleShortLogReportAsLossS36 TestNodeThatLostItsDataIsRefused
		TestNewDataDirectoryVotesOnlyOnceAMajorityAcceptedIt
		TestReplaceANodeByANewIncarnationOfItsID

S37 unsaved candidacy
	A candidate that crashed before saving its term and vote, and campaigns again in the
	same term, never counts grants given against entries it did not save.
	tests: TestCandidateSendsVoteRequestsOnlyOnceTheirClaimsAreDurableS37
		TestSimThreeNodesWithoutPreVote TestSimFiveNodesWithoutPreVote
		TestSimFindsVoteRequestSentBeforePersist
`

// scenario is one entry of the catalog.
type scenario struct {
	tag, name, rule  string
	tests            []string
	pending, partial string
}

// parseCatalog reads scenarioCatalog.
func parseCatalog(text string) ([]scenario, error) {
	var out []scenario
	var field *string
	var tests string
	flush := func() {
		if len(out) > 0 {
			out[len(out)-1].tests = strings.Fields(tests)
		}
		tests = ""
	}
	for i, line := range strings.Split(text, "\n") {
		switch {
		case strings.TrimSpace(line) == "", strings.HasPrefix(line, "# "):
			continue
		case strings.HasPrefix(line, "S"):
			flush()
			tag, name, _ := strings.Cut(line, " ")
			out = append(out, scenario{tag: tag, name: strings.TrimSpace(name)})
			field = &out[len(out)-1].rule
			continue
		case len(out) == 0 || !strings.HasPrefix(line, "\t"):
			return nil, fmt.Errorf("line %d: %q is neither a heading, a scenario nor indented under one", i, line)
		}
		s := &out[len(out)-1]
		text := strings.TrimSpace(line)
		if !strings.HasPrefix(line, "\t\t") {
			key, rest, ok := strings.Cut(text, ": ")
			switch {
			case ok && key == "tests":
				field, text = &tests, rest
			case ok && key == "pending":
				field, text = &s.pending, rest
			case ok && key == "partial":
				field, text = &s.partial, rest
			case field != &s.rule:
				return nil, fmt.Errorf("line %d: %s: %q: want tests:, pending: or partial: after the rule", i, s.tag, text)
			}
		}
		*field = strings.TrimSpace(*field + " " + text)
	}
	flush()
	return out, nil
}

// TestScenarioCatalog keeps the catalog and the code in step: every tag the code cites is
// in the catalog, every test the catalog names exists, and an entry is either pending
// with no tests or built with at least one.
func TestScenarioCatalog(t *testing.T) {
	scenarios, err := parseCatalog(scenarioCatalog)
	if err != nil {
		t.Fatalf("scenarioCatalog: %v", err)
	}
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
		for _, at := range scenarioTags(text) {
			cites = append(cites, citation{text[at[0]:at[1]], fset.Position(pos + token.Pos(at[0]))})
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
// TLS13 or HTTPS2. It returns the start and end offset of each.
func scenarioTags(text string) [][2]int {
	var tags [][2]int
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
		tags = append(tags, [2]int{i, j})
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

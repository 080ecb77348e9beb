package main

import (
	"bytes"
	"testing"

	"github.com/kommander-go/kommander"
)

// TestWALReturnsLargeValuesAfterSmallOnes pins what `kommander node` needs from the WAL
// for values up to -max-value: a large entry saved after small ones reads back whole, in
// every range that includes it. (Found by putting an 8 MiB value through three node
// processes: a follower panicked in WAL.Entries reading the committed entry. A Save whose
// payload is too large for the recent-entry cache must not leave the cache looking as if
// it still ended at the last entry.)
func TestWALReturnsLargeValuesAfterSmallOnes(t *testing.T) {
	w, err := kommander.OpenWAL(t.TempDir(), kommander.WALOptions{UnsafeNoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	small := kommander.Entry{Term: 1, Index: 1, Type: cmdPut, Data: []byte("small")}
	big := kommander.Entry{Term: 1, Index: 2, Type: cmdPut, Data: bytes.Repeat([]byte("v"), 256<<10)}
	for _, e := range []kommander.Entry{small, big} {
		if err := w.Save([]kommander.Update{{Partition: 0, Entries: []kommander.Entry{e}}}); err != nil {
			t.Fatal(err)
		}
	}
	for _, lo := range []uint64{1, 2} {
		func() {
			defer func() {
				if p := recover(); p != nil {
					t.Errorf("Entries(%d, 3) panicked: %v", lo, p)
				}
			}()
			ents, err := w.Entries(0, lo, 3, 1<<30)
			if err != nil {
				t.Errorf("Entries(%d, 3): %v", lo, err)
				return
			}
			if len(ents) != int(3-lo) || !bytes.Equal(ents[len(ents)-1].Data, big.Data) {
				t.Errorf("Entries(%d, 3) returned %d entries, the last with %d bytes; want the %d-byte value last", lo, len(ents), len(ents[len(ents)-1].Data), len(big.Data))
			}
		}()
	}
}

package kommander

import "testing"

func TestInflightsBoundByCountAndBytes(t *testing.T) {
	in := newInflights(3, 100)
	for i, size := range []uint64{10, 20, 30} {
		if in.full() {
			t.Fatalf("full after %d appends", i)
		}
		in.add(uint64(i+1), size)
	}
	if !in.full() {
		t.Fatal("three appends fill a window of three")
	}
	in.freeLE(2)
	if in.full() || in.count != 1 || in.bytes != 30 {
		t.Fatalf("after freeing up to 2: count %d bytes %d", in.count, in.bytes)
	}
	in.add(4, 80) // 110 bytes: the byte bound fills the window first
	if !in.full() {
		t.Fatal("110 of 100 bytes in flight must be full")
	}
	// Wrap around the ring.
	in.freeLE(4)
	for i := uint64(5); i < 20; i++ {
		in.add(i, 1)
		in.freeLE(i - 1)
	}
	if in.count != 1 || in.bytes != 1 {
		t.Fatalf("after wrapping: count %d bytes %d", in.count, in.bytes)
	}
	in.reset()
	if in.count != 0 || in.bytes != 0 || in.full() {
		t.Fatal("reset")
	}
}

package kommander

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
)

// TestDataDirLockKeepsASecondOpenerOut: while one opener holds a data directory, a second
// fails at once with ErrDirLocked naming the directory and the holder; once the first lets
// go, the directory can be locked again (S33).
func TestDataDirLockKeepsASecondOpenerOut(t *testing.T) {
	dir := t.TempDir()
	first, err := lockDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	_, err = lockDir(dir)
	if !errors.Is(err, ErrDirLocked) {
		t.Fatalf("second lock: %v, want ErrDirLocked", err)
	}
	for _, want := range []string{dir, fmt.Sprintf("pid %d", os.Getpid())} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not name %q", err, want)
		}
	}
	if err := first.unlock(); err != nil {
		t.Fatal(err)
	}
	again, err := lockDir(dir)
	if err != nil {
		t.Fatalf("lock after unlock: %v", err)
	}
	if err := again.unlock(); err != nil {
		t.Fatal(err)
	}
}

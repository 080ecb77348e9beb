package kommander

import (
	"fmt"
	"go/parser"
	"go/token"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestPackageDocMapsEveryFile keeps the file map in the package doc (doc.go, "# Files") in
// step with the files: every production .go file of the package has a line that says
// what it holds, and every file the map names exists.
func TestPackageDocMapsEveryFile(t *testing.T) {
	f, err := parser.ParseFile(token.NewFileSet(), "doc.go", nil, parser.ParseComments|parser.PackageClauseOnly)
	if err != nil {
		t.Fatal(err)
	}
	if f.Doc == nil {
		t.Fatal("doc.go has no package doc")
	}
	mapped, err := fileMap(f.Doc.Text())
	if err != nil {
		t.Fatalf("doc.go: %v", err)
	}

	names, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	var files []string
	for _, name := range names {
		if !strings.HasSuffix(name, "_test.go") {
			files = append(files, name)
		}
	}
	for _, name := range files {
		if _, ok := mapped[name]; !ok {
			t.Errorf("%s is not in the file map of doc.go: add a line saying what it holds", name)
		}
	}
	for name := range mapped {
		if !slices.Contains(files, name) {
			t.Errorf("the file map of doc.go names %s, which is not a production file of the package", name)
		}
	}
}

// fileMap reads the "# Files" section of a package doc: a code block with one line per
// file, its name and then what it holds; an indented line without a file name continues
// the line before it.
func fileMap(doc string) (map[string]string, error) {
	_, section, ok := strings.Cut(doc, "\n# Files\n")
	if !ok {
		return nil, fmt.Errorf("no \"# Files\" heading in the package doc")
	}
	mapped := map[string]string{}
	last := ""
	for _, line := range strings.Split(section, "\n") {
		if strings.HasPrefix(line, "# ") {
			break // the next section
		}
		code, ok := strings.CutPrefix(line, "\t")
		if !ok || strings.TrimSpace(code) == "" {
			continue // prose around the map, or a blank line between groups
		}
		name, what, _ := strings.Cut(code, " ")
		what = strings.TrimSpace(what)
		switch {
		case name == "" && last != "":
			mapped[last] += " " + what
		case name == "" || !strings.HasSuffix(name, ".go"):
			return nil, fmt.Errorf("file map line %q does not start with a file name", code)
		case what == "":
			return nil, fmt.Errorf("file map line for %s does not say what the file holds", name)
		default:
			if _, dup := mapped[name]; dup {
				return nil, fmt.Errorf("file map names %s twice", name)
			}
			mapped[name], last = what, name
		}
	}
	if len(mapped) == 0 {
		return nil, fmt.Errorf("the \"# Files\" section maps no file")
	}
	return mapped, nil
}

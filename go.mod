module github.com/kommander-go/kommander

go 1.23

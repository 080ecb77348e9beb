//go:build linux && !(amd64 || arm64)

package kommander

import "os"

// aioDataSync is not used on this architecture: dataSync makes the plain system call.
func aioDataSync(*os.File) (bool, error) { return false, nil }

package agent

import (
	"os"
	"testing"

	"github.com/capsule-cloud/capsule/volume"
)

func TestMain(m *testing.M) {
	volume.RunHelper(os.Args) // the volume tests run this binary as the mount helper
	os.Exit(m.Run())
}

package lifecycle

import (
	"fmt"
	"testing"

	"github.com/capsule-cloud/capsule/errdefs"
)

// A refused action is an errdefs Conflict whose safe message is Nova's.
func TestRefusalIsAConflict(t *testing.T) {
	_, err := Begin(ActStart, Active, NoTask)
	if err == nil {
		t.Fatal("start of an active instance accepted")
	}
	wrapped := fmt.Errorf("start i-1: %w", err)
	if !errdefs.IsConflict(wrapped) || errdefs.Message(wrapped) != "Cannot 'start' instance while it is in vm_state active" {
		t.Errorf("kind %q message %q", errdefs.KindOf(wrapped), errdefs.Message(wrapped))
	}
	if _, err := Begin(ActStop, Active, Rebooting); !errdefs.IsConflict(err) || errdefs.Message(err) != "Cannot 'stop' instance while it is in task_state rebooting" {
		t.Errorf("task refusal: %v", err)
	}
}

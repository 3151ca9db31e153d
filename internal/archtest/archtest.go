// Package archtest checks the module's architecture rules in its tests:
// which packages may depend on which (the API never reaches the
// conductor, the scheduler or the agent; host-side packages never reach
// the database), and that only the instance domain package writes an
// instance's vm_state and task_state. It has no code of its own.
package archtest

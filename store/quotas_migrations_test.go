package store

import "testing"

// Migrate applies the steps in slice order and skips those at or below the
// database's version, so a step listed out of order (helpers add versions
// side by side) would be skipped for ever on some databases.
func TestMigrationVersionsAscend(t *testing.T) {
	for i := 1; i < len(migrations); i++ {
		if migrations[i].version <= migrations[i-1].version {
			t.Fatalf("migration %d (%s) is listed after %d", migrations[i].version, migrations[i].name, migrations[i-1].version)
		}
	}
}

package store

import (
	"context"
	"fmt"
	"time"

	"gorm.io/gorm"
)

// SchemaMigration records an applied schema version.
type SchemaMigration struct {
	Version   int `gorm:"primaryKey;autoIncrement:false"`
	Name      string
	AppliedAt time.Time
}

type migration struct {
	version int
	name    string
	up      func(tx *gorm.DB) error
}

// migrations is append-only: never edit an applied step, add a new one.
var migrations = []migration{
	{1, "initial schema", func(tx *gorm.DB) error {
		return tx.AutoMigrate(&Project{}, &User{}, &Role{}, &RoleAssignment{}, &Token{},
			&Flavor{}, &FlavorExtraSpec{}, &FlavorAccess{}, &Image{}, &Instance{},
			&InstanceAction{}, &InstanceActionEvent{}, &Service{}, &Claim{}, &Migration{})
	}},
	{2, "networks, subnets, ports, IP allocations", func(tx *gorm.DB) error {
		return tx.AutoMigrate(&Network{}, &Subnet{}, &Port{}, &IPAllocation{})
	}},
	{3, "instances remember their own ports and a requested host", func(tx *gorm.DB) error {
		// A database created by this binary already has them (migration 1
		// migrates the current model); older ones get them here.
		for _, col := range []string{"OwnedPorts", "RequestedHost"} {
			if tx.Migrator().HasColumn(&Instance{}, col) {
				continue
			}
			if err := tx.Migrator().AddColumn(&Instance{}, col); err != nil {
				return err
			}
		}
		return nil
	}},
	{4, "instances keep their old flavor while a resize awaits confirmation", func(tx *gorm.DB) error {
		for _, col := range []string{"OldFlavorRowID", "OldFlavorID", "OldFlavorName", "OldVCPUs", "OldMemoryMB",
			"OldRootGB", "OldExtraSpecs", "ResizeFromState"} {
			if tx.Migrator().HasColumn(&Instance{}, col) {
				continue
			}
			if err := tx.Migrator().AddColumn(&Instance{}, col); err != nil {
				return err
			}
		}
		return nil
	}},
	{5, "migrations carry the cold-migration step machine", func(tx *gorm.DB) error {
		for _, col := range []string{"RequestedHost", "RequestID", "UserID", "ProjectID", "SourceVMState", "SnapshotRef",
			"SnapshotDigest", "ImageBytes", "PushedBytes", "PulledBytes", "Rollback", "ErrorMessage", "StepStartedAt"} {
			if tx.Migrator().HasColumn(&Migration{}, col) {
				continue
			}
			if err := tx.Migrator().AddColumn(&Migration{}, col); err != nil {
				return err
			}
		}
		if !tx.Migrator().HasIndex(&Migration{}, "Step") {
			return tx.Migrator().CreateIndex(&Migration{}, "Step")
		}
		return nil
	}},
	{6, "host events (alarms, OOM kills)", func(tx *gorm.DB) error {
		return tx.AutoMigrate(&HostEvent{})
	}},
	{7, "hosts report dedicated CPUs (PCPUs), claims say whether they take them", func(tx *gorm.DB) error {
		for _, c := range []struct {
			model any
			col   string
		}{{&Service{}, "PCPUs"}, {&Claim{}, "Dedicated"}} {
			if tx.Migrator().HasColumn(c.model, c.col) {
				continue
			}
			if err := tx.Migrator().AddColumn(c.model, c.col); err != nil {
				return err
			}
		}
		return nil
	}},
	{8, "keypairs; instances keep the public key they booted with", func(tx *gorm.DB) error {
		if err := tx.AutoMigrate(&Keypair{}); err != nil {
			return err
		}
		if tx.Migrator().HasColumn(&Instance{}, "KeyData") {
			return nil
		}
		return tx.Migrator().AddColumn(&Instance{}, "KeyData")
	}},
	{9, "operator-set quota limits per project and per user", func(tx *gorm.DB) error {
		return tx.AutoMigrate(&QuotaLimit{})
	}},
	{10, "server groups; instances keep their scheduler hints", func(tx *gorm.DB) error {
		if err := tx.AutoMigrate(&ServerGroup{}, &ServerGroupMember{}); err != nil {
			return err
		}
		if tx.Migrator().HasColumn(&Instance{}, "SchedulerHints") {
			return nil
		}
		return tx.Migrator().AddColumn(&Instance{}, "SchedulerHints")
	}},
	{11, "server tags", func(tx *gorm.DB) error {
		if tx.Migrator().HasColumn(&Instance{}, "Tags") {
			return nil
		}
		return tx.Migrator().AddColumn(&Instance{}, "Tags")
	}},
	{12, "instance-action events say why they failed (details, 2.84)", func(tx *gorm.DB) error {
		if tx.Migrator().HasColumn(&InstanceActionEvent{}, "Details") {
			return nil
		}
		return tx.Migrator().AddColumn(&InstanceActionEvent{}, "Details")
	}},
	{13, "instances remember who locked them", func(tx *gorm.DB) error {
		if tx.Migrator().HasColumn(&Instance{}, "LockedBy") {
			return nil
		}
		return tx.Migrator().AddColumn(&Instance{}, "LockedBy")
	}},
	{14, "transactional outbox of bus messages", func(tx *gorm.DB) error {
		return tx.AutoMigrate(&OutboxMessage{})
	}},
	{15, "ports say whether the Compute API bound them (a server's NICs)", func(tx *gorm.DB) error {
		if !tx.Migrator().HasColumn(&Port{}, "ComputeBound") {
			if err := tx.Migrator().AddColumn(&Port{}, "ComputeBound"); err != nil {
				return err
			}
		}
		// Until now the Compute API was the only writer of compute:*
		// owners on ports of a server's own project: those are its NICs.
		// A port of another project naming the server is not (the
		// device_id hijack this column closes).
		return tx.Exec("UPDATE ports SET compute_bound = ? WHERE device_owner LIKE ? AND EXISTS "+
			"(SELECT 1 FROM instances WHERE instances.id = ports.device_id AND instances.project_id = ports.project_id "+
			"AND instances.deleted_at IS NULL)", true, "compute:%").Error
	}},
	{16, "per-project quota lock rows; network quota limits", func(tx *gorm.DB) error {
		return tx.AutoMigrate(&QuotaLock{}, &NetworkQuotaLimit{})
	}},
	{17, "security groups, their rules, ports' memberships", func(tx *gorm.DB) error {
		if err := tx.AutoMigrate(&SecurityGroup{}, &SecurityGroupRule{}, &PortSecurityGroup{}); err != nil {
			return err
		}
		// Ports with port security were (as the API showed) in their
		// project's default group, which is now enforced: they join the
		// stored one, so nothing running loses its traffic.
		return joinDefaultGroups(tx)
	}},
	{18, "shelved servers remember their shelve image, when and where they were shelved", func(tx *gorm.DB) error {
		for _, col := range []string{"ShelvedImageID", "ShelvedAt", "ShelvedHost"} {
			if tx.Migrator().HasColumn(&Instance{}, col) {
				continue
			}
			if err := tx.Migrator().AddColumn(&Instance{}, col); err != nil {
				return err
			}
		}
		return nil
	}},
	{19, "instances may have a config drive", func(tx *gorm.DB) error {
		if tx.Migrator().HasColumn(&Instance{}, "ConfigDrive") {
			return nil
		}
		return tx.Migrator().AddColumn(&Instance{}, "ConfigDrive")
	}},
	{20, "instances keep the reason they were locked (2.73)", func(tx *gorm.DB) error {
		if tx.Migrator().HasColumn(&Instance{}, "LockedReason") {
			return nil
		}
		return tx.Migrator().AddColumn(&Instance{}, "LockedReason")
	}},
	{21, "indexes in the servers list's order (a page reads its own rows only)", func(tx *gorm.DB) error {
		// The list pages newest first, then by id (a keyset on both), per
		// project or across all of them (admins).
		for _, ddl := range []string{
			"CREATE INDEX IF NOT EXISTS ix_instances_project_list ON instances (project_id, created_at, id)",
			"CREATE INDEX IF NOT EXISTS ix_instances_list ON instances (created_at, id)",
		} {
			if err := tx.Exec(ddl).Error; err != nil {
				return err
			}
		}
		return nil
	}},
	{22, "single-use remote console tokens", func(tx *gorm.DB) error {
		return tx.AutoMigrate(&ConsoleToken{})
	}},
	{23, "volumes, volume snapshots, volume attachments, volume quota limits", func(tx *gorm.DB) error {
		return tx.AutoMigrate(&Volume{}, &VolumeSnapshot{}, &VolumeAttachment{}, &VolumeQuotaLimit{})
	}},
	{24, "ports' allowed address pairs", func(tx *gorm.DB) error {
		if tx.Migrator().HasColumn(&Port{}, "AllowedAddressPairs") {
			return nil
		}
		return tx.Migrator().AddColumn(&Port{}, "AllowedAddressPairs")
	}},
	{25, "identity: domains, domain grants, application credentials; project tags and parents; user descriptions, options and extra attributes", func(tx *gorm.DB) error {
		if err := tx.AutoMigrate(&Domain{}, &DomainRoleAssignment{}, &ApplicationCredential{}); err != nil {
			return err
		}
		for model, cols := range map[any][]string{
			&Project{}: {"ParentID", "Tags"},
			&User{}:    {"Description", "Options", "Extra"},
			&Token{}:   {"DomainID", "AppCredID"},
		} {
			for _, col := range cols {
				if tx.Migrator().HasColumn(model, col) {
					continue
				}
				if err := tx.Migrator().AddColumn(model, col); err != nil {
					return err
				}
			}
		}
		if !tx.Migrator().HasIndex(&Project{}, "ParentID") {
			if err := tx.Migrator().CreateIndex(&Project{}, "ParentID"); err != nil {
				return err
			}
		}
		if !tx.Migrator().HasIndex(&Token{}, "AppCredID") {
			if err := tx.Migrator().CreateIndex(&Token{}, "AppCredID"); err != nil {
				return err
			}
		}
		// The default domain always exists (Keystone's "default").
		return tx.Where(Domain{ID: "default"}).Attrs(Domain{Name: "Default", Description: "The default domain",
			Enabled: true, Tags: "[]"}).FirstOrCreate(&Domain{}).Error
	}},
	{26, "image members (sharing with other projects)", func(tx *gorm.DB) error {
		return tx.AutoMigrate(&ImageMember{})
	}},
	{27, "instances keep their adminPass hash and the password they posted to the metadata service", func(tx *gorm.DB) error {
		for _, col := range []string{"AdminPassHash", "MetadataPassword"} {
			if tx.Migrator().HasColumn(&Instance{}, col) {
				continue
			}
			if err := tx.Migrator().AddColumn(&Instance{}, col); err != nil {
				return err
			}
		}
		return nil
	}},
	{28, "identity: domain-specific roles (names unique per domain), role options and extra attributes", func(tx *gorm.DB) error {
		for _, col := range []string{"DomainID", "Options", "Extra"} {
			if tx.Migrator().HasColumn(&Role{}, col) {
				continue
			}
			if err := tx.Migrator().AddColumn(&Role{}, col); err != nil {
				return err
			}
		}
		if tx.Migrator().HasIndex(&Role{}, "idx_roles_name") {
			if err := tx.Migrator().DropIndex(&Role{}, "idx_roles_name"); err != nil {
				return err
			}
		}
		if !tx.Migrator().HasIndex(&Role{}, "ux_role_name") {
			return tx.Migrator().CreateIndex(&Role{}, "ux_role_name")
		}
		return nil
	}},
	{29, "server groups keep their max_server_per_host rule (2.64)", func(tx *gorm.DB) error {
		if tx.Migrator().HasColumn(&ServerGroup{}, "MaxServerPerHost") {
			return nil
		}
		return tx.Migrator().AddColumn(&ServerGroup{}, "MaxServerPerHost")
	}},
	{30, "identity: groups, their members and their role grants", func(tx *gorm.DB) error {
		return tx.AutoMigrate(&Group{}, &GroupMember{}, &GroupRoleAssignment{})
	}},
	{31, "indexes in the ports list's order (a page reads its own rows only)", func(tx *gorm.DB) error {
		// ListPortsPage pages oldest first, then by id (a keyset on both):
		// across all ports (admins), or a project's own ports plus those on
		// its networks (members).
		for _, ddl := range []string{
			"CREATE INDEX IF NOT EXISTS ix_ports_list ON ports (created_at, id)",
			"CREATE INDEX IF NOT EXISTS ix_ports_project_list ON ports (project_id, created_at, id)",
			"CREATE INDEX IF NOT EXISTS ix_ports_network_list ON ports (network_id, created_at, id)",
		} {
			if err := tx.Exec(ddl).Error; err != nil {
				return err
			}
		}
		return nil
	}},
	{32, "host aggregates; a compute host's zone is its zoned aggregate's, else its agent's", func(tx *gorm.DB) error {
		if err := tx.AutoMigrate(&Aggregate{}, &AggregateHost{}); err != nil {
			return err
		}
		if !tx.Migrator().HasColumn(&Service{}, "AgentZone") {
			if err := tx.Migrator().AddColumn(&Service{}, "AgentZone"); err != nil {
				return err
			}
		}
		return tx.Exec("UPDATE services SET agent_zone = zone WHERE binary_name = ?", ComputeBinary).Error
	}},
	{33, "cold migrations remember the local volumes they copy", func(tx *gorm.DB) error {
		if tx.Migrator().HasColumn(&Migration{}, "VolumeIDs") {
			return nil
		}
		return tx.Migrator().AddColumn(&Migration{}, "VolumeIDs")
	}},
	{34, "indexes in the images list's default order (a page reads its own rows only)", func(tx *gorm.DB) error {
		// GET /v2/images pages newest first, then by id (a keyset on
		// both): across every image (admins), or a project's own images
		// plus the public and shared ones.
		for _, ddl := range []string{
			"CREATE INDEX IF NOT EXISTS ix_images_list ON images (created_at, id)",
			"CREATE INDEX IF NOT EXISTS ix_images_owner_list ON images (owner, created_at, id)",
			"CREATE INDEX IF NOT EXISTS ix_images_visibility_list ON images (visibility, created_at, id)",
		} {
			if err := tx.Exec(ddl).Error; err != nil {
				return err
			}
		}
		return nil
	}},
	{35, "tags on networks, subnets, ports and security groups (standard-attr-tag); ports keep binding:profile", func(tx *gorm.DB) error {
		for _, m := range []any{&Network{}, &Subnet{}, &Port{}, &SecurityGroup{}} {
			if tx.Migrator().HasColumn(m, "Tags") {
				continue
			}
			if err := tx.Migrator().AddColumn(m, "Tags"); err != nil {
				return err
			}
		}
		if tx.Migrator().HasColumn(&Port{}, "BindingProfile") {
			return nil
		}
		return tx.Migrator().AddColumn(&Port{}, "BindingProfile")
	}},
	{36, "identity: inherited (OS-INHERIT) and system role grants, implied roles, system-scoped tokens", func(tx *gorm.DB) error {
		if err := tx.AutoMigrate(&InheritedRoleAssignment{}, &SystemRoleAssignment{}, &ImpliedRole{}); err != nil {
			return err
		}
		if tx.Migrator().HasColumn(&Token{}, "System") {
			return nil
		}
		return tx.Migrator().AddColumn(&Token{}, "System")
	}},
	{37, "servers' usage history (two tiers of bounded length)", func(tx *gorm.DB) error {
		return tx.AutoMigrate(&UsagePoint{})
	}},
	{38, "instances' requested (pinned) availability zone, apart from the zone they run in", func(tx *gorm.DB) error {
		if !tx.Migrator().HasColumn(&Instance{}, "RequestedZone") {
			if err := tx.Migrator().AddColumn(&Instance{}, "RequestedZone"); err != nil {
				return err
			}
		}
		// What older servers asked for is not recorded; their placed zone
		// is what every later placement kept them in so far.
		return tx.Model(&Instance{}).Where("1 = 1").Update("requested_zone", gorm.Expr("availability_zone")).Error
	}},
	{39, "servers' ephemeral disks (block-device mappings blank -> local, the flavor's ephemeral)", func(tx *gorm.DB) error {
		if tx.Migrator().HasColumn(&Instance{}, "EphemeralDisks") {
			return nil
		}
		return tx.Migrator().AddColumn(&Instance{}, "EphemeralDisks")
	}},
	{40, "volumes' image metadata (Cinder's os-set_image_metadata)", func(tx *gorm.DB) error {
		if tx.Migrator().HasColumn(&Volume{}, "ImageMetadata") {
			return nil
		}
		return tx.Migrator().AddColumn(&Volume{}, "ImageMetadata")
	}},
	{41, "Keystone credentials (/v3/credentials, OS-EC2)", func(tx *gorm.DB) error {
		return tx.AutoMigrate(&Credential{})
	}},
	{42, "instances count their updates (row_version, raised by a trigger at every UPDATE)", func(tx *gorm.DB) error {
		if !tx.Migrator().HasColumn(&Instance{}, "RowVersion") {
			if err := tx.Migrator().AddColumn(&Instance{}, "RowVersion"); err != nil {
				return err
			}
		}
		for _, ddl := range instanceRowVersionTrigger(tx.Dialector.Name()) {
			if err := tx.Exec(ddl).Error; err != nil {
				return err
			}
		}
		return nil
	}},
}

// instanceRowVersionTrigger is the DDL of the trigger that raises
// instances.row_version at every UPDATE of a row, whatever the statement
// sets (a Save of a whole struct, a map of columns, raw SQL), so a reader
// that saw version v knows the row is unchanged while it still reads v.
// A statement that sets row_version itself cannot lower it: the new
// version is always the old one plus one. Idempotent (the migration tests
// re-run it).
func instanceRowVersionTrigger(dialect string) []string {
	if dialect == "postgres" {
		// BEFORE UPDATE: the row is written once, with its new version.
		return []string{
			`CREATE OR REPLACE FUNCTION instances_bump_row_version() RETURNS trigger AS $$
BEGIN
	NEW.row_version := OLD.row_version + 1;
	RETURN NEW;
END
$$ LANGUAGE plpgsql`,
			"DROP TRIGGER IF EXISTS instances_row_version ON instances",
			"CREATE TRIGGER instances_row_version BEFORE UPDATE ON instances FOR EACH ROW EXECUTE PROCEDURE instances_bump_row_version()",
		}
	}
	// SQLite's BEFORE triggers cannot change NEW: an AFTER trigger writes
	// the version. Its own UPDATE does not fire it again (recursive
	// triggers are off by default), and the WHEN guard stops it anyway:
	// that UPDATE leaves the version above the old one. A statement that
	// set row_version lower or equal gets old + 1 too.
	return []string{
		"DROP TRIGGER IF EXISTS instances_row_version",
		`CREATE TRIGGER instances_row_version AFTER UPDATE ON instances FOR EACH ROW
WHEN NEW.row_version <= OLD.row_version
BEGIN
	UPDATE instances SET row_version = OLD.row_version + 1 WHERE rowid = NEW.rowid;
END`,
	}
}

// SchemaVersion is the newest schema version this binary knows.
func SchemaVersion() int { return migrations[len(migrations)-1].version }

// Migrate applies every migration newer than the database's version, each
// in its own transaction.
func (s *Store) Migrate(ctx context.Context) error {
	db := s.DB.WithContext(ctx)
	if err := db.AutoMigrate(&SchemaMigration{}); err != nil {
		return fmt.Errorf("store: schema_migrations table: %w", err)
	}
	var current int
	if err := db.Model(&SchemaMigration{}).Select("COALESCE(MAX(version), 0)").Scan(&current).Error; err != nil {
		return fmt.Errorf("store: read schema version: %w", err)
	}
	if current > SchemaVersion() {
		return fmt.Errorf("store: database schema version %d is newer than this binary's %d", current, SchemaVersion())
	}
	for _, m := range migrations {
		if m.version <= current {
			continue
		}
		err := db.Transaction(func(tx *gorm.DB) error {
			if err := m.up(tx); err != nil {
				return err
			}
			return tx.Create(&SchemaMigration{Version: m.version, Name: m.name, AppliedAt: time.Now().UTC()}).Error
		})
		if err != nil {
			return fmt.Errorf("store: migration %d (%s): %w", m.version, m.name, err)
		}
		logSchema(m.version, m.name)
	}
	return nil
}

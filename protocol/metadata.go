package protocol

// KindInstanceMetadata (conductor queue, request/reply) asks for what the
// metadata service serves a server: the agent that proxies a server's
// request to 169.254.169.254 names the server by the OVS port the request
// came in on, never by anything the server sent.
const KindInstanceMetadata = "instance_metadata"

// InstanceMetadataRequest asks the conductor for one server's metadata.
// Host is the asking agent's host: the conductor answers only about a
// server placed there.
type InstanceMetadataRequest struct {
	Host       string `json:"host"`
	InstanceID string `json:"instance_id"`
}

// InstanceMetadata is what the metadata service and the config drive
// render (package metadata): the server as its owner configured it.
type InstanceMetadata struct {
	UUID             string            `json:"uuid"`
	Name             string            `json:"name"`
	Hostname         string            `json:"hostname"`
	ProjectID        string            `json:"project_id"`
	AvailabilityZone string            `json:"availability_zone"`
	LaunchIndex      int               `json:"launch_index"`
	ReservationID    string            `json:"reservation_id,omitempty"`
	ImageID          string            `json:"image_id,omitempty"`
	FlavorName       string            `json:"flavor_name,omitempty"`
	KeyName          string            `json:"key_name,omitempty"`
	KeyData          string            `json:"key_data,omitempty"` // OpenSSH public key (or x509 PEM)
	Meta             map[string]string `json:"meta,omitempty"`
	// UserData is as stored: base64 of the user's bytes ("" = none).
	UserData       string   `json:"user_data,omitempty"`
	SecurityGroups []string `json:"security_groups,omitempty"`
	NICs           []NIC    `json:"nics,omitempty"`
	// Password is what the server posted to the metadata service's
	// password endpoint ("" = nothing yet).
	Password string `json:"password,omitempty"`
}

// KindSetAdminPassword (compute.<host>, request/reply) sets root's
// password of a server (Nova's changePassword). Only the hash travels.
const KindSetAdminPassword = "set_admin_password"

// SetAdminPassword asks the host to put Hash (crypt(3) SHA-512) in root's
// /etc/shadow line of the server.
type SetAdminPassword struct {
	InstanceID string `json:"instance_id"`
	Hash       string `json:"hash"`
}

// KindSetMetadataPassword (conductor queue, request/reply) stores the
// password a server posted to the metadata service (Nova's encrypted
// password): once; a second post is a Conflict. Like
// KindInstanceMetadata, the agent names the server by the OVS port the
// post came in on, and the conductor takes it only for a server on Host.
const KindSetMetadataPassword = "set_metadata_password"

// MaxMetadataPassword is the longest password a server may post (Nova's
// 256 bytes).
const MaxMetadataPassword = 256

// SetMetadataPassword is a server's posted password.
type SetMetadataPassword struct {
	Host       string `json:"host"`
	InstanceID string `json:"instance_id"`
	Password   string `json:"password"`
}

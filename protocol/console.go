package protocol

// KindConsoleAttach asks an agent (compute.<host> queue) to open an
// interactive shell with a terminal in one of its servers and to connect
// it to the console proxy: request/reply, ConsoleAttach in,
// ConsoleAttachReply out. The agent dials URL and presents Secret; the
// reply comes once the shell runs and the proxy accepted the stream.
const KindConsoleAttach = "console_attach"

// ConsoleAttach is one console session to connect.
type ConsoleAttach struct {
	InstanceID string `json:"instance_id"`
	// URL is where the proxy that holds the user's websocket waits for
	// the stream (http:// or https://, path included).
	URL string `json:"url"`
	// Secret authenticates the agent's connection to the proxy: random,
	// single-use, known only to the proxy and (through the bus) the agent.
	Secret string `json:"secret"`
}

// ConsoleAttachReply says the session is connected.
type ConsoleAttachReply struct{}

package compute

import (
	"crypto/md5"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"
)

// Keypair types (Nova's KEYPAIR_TYPE_SSH / KEYPAIR_TYPE_X509).
const (
	keypairSSH  = "ssh"
	keypairX509 = "x509"
)

// generatedKeyBits is the size of the RSA keys the API generates, as Nova's.
const generatedKeyBits = 2048

// generatedKey is what a keypair create without public_key hands back.
type generatedKey struct {
	publicKey, privateKey, fingerprint string
}

// colonHex writes sum as Nova and ssh-keygen do: lower-case hex pairs
// joined by colons.
func colonHex(sum []byte) string {
	h := hex.EncodeToString(sum)
	pairs := make([]string, 0, len(sum))
	for i := 0; i < len(h); i += 2 {
		pairs = append(pairs, h[i:i+2])
	}
	return strings.Join(pairs, ":")
}

// sshFingerprint parses one OpenSSH public key line and returns the MD5
// fingerprint of its key blob (ssh-keygen -l -E md5, Nova's
// generate_fingerprint). Like Nova it takes exactly one key with no
// authorized_keys options: the line is what a server's authorized_keys
// gets, so it must not smuggle options or further keys in.
func sshFingerprint(line string) (string, error) {
	if strings.ContainsAny(strings.TrimSpace(line), "\r\n") {
		return "", errors.New("failed to generate fingerprint (a public key is one line)")
	}
	key, _, options, _, err := ssh.ParseAuthorizedKey([]byte(line))
	if err != nil {
		return "", fmt.Errorf("failed to generate fingerprint (%v)", err)
	}
	if len(options) > 0 {
		return "", errors.New("failed to generate fingerprint (authorized_keys options are not accepted)")
	}
	sum := md5.Sum(key.Marshal())
	return colonHex(sum[:]), nil
}

// x509Fingerprint parses a PEM certificate and returns the SHA-1 of its
// DER, colon hex (Nova's generate_x509_fingerprint).
func x509Fingerprint(certPEM string) (string, error) {
	block, _ := pem.Decode([]byte(certPEM))
	if block == nil || block.Type != "CERTIFICATE" {
		return "", errors.New("failed to generate fingerprint (no PEM certificate found)")
	}
	if _, err := x509.ParseCertificate(block.Bytes); err != nil {
		return "", fmt.Errorf("failed to generate fingerprint (%v)", err)
	}
	sum := sha1.Sum(block.Bytes)
	return colonHex(sum[:]), nil
}

// fingerprintOf validates an imported public key of type typ.
func fingerprintOf(typ, publicKey string) (string, error) {
	if typ == keypairX509 {
		return x509Fingerprint(publicKey)
	}
	return sshFingerprint(publicKey)
}

// generateSSHKey makes an RSA key pair: the private key in PEM
// ("RSA PRIVATE KEY", what Nova returns and ssh accepts) and the public
// key as an authorized_keys line.
func generateSSHKey() (generatedKey, error) {
	priv, err := rsa.GenerateKey(rand.Reader, generatedKeyBits)
	if err != nil {
		return generatedKey{}, fmt.Errorf("generate RSA key: %w", err)
	}
	pub, err := ssh.NewPublicKey(&priv.PublicKey)
	if err != nil {
		return generatedKey{}, fmt.Errorf("encode public key: %w", err)
	}
	line := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(pub))) + " Generated-by-Capsule"
	fp, err := sshFingerprint(line)
	if err != nil {
		return generatedKey{}, err
	}
	privPEM := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(priv)})
	return generatedKey{publicKey: line, privateKey: string(privPEM), fingerprint: fp}, nil
}

// generateX509Key makes a self-signed client certificate for userID (as
// Nova's generate_winrm_x509_cert: CN is the user, client auth, ten years):
// the certificate is the keypair's public key.
func generateX509Key(userID string, now time.Time) (generatedKey, error) {
	priv, err := rsa.GenerateKey(rand.Reader, generatedKeyBits)
	if err != nil {
		return generatedKey{}, fmt.Errorf("generate RSA key: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 63))
	if err != nil {
		return generatedKey{}, fmt.Errorf("certificate serial: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: userID},
		NotBefore:    now.Add(-time.Minute),
		NotAfter:     now.AddDate(10, 0, 0),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &priv.PublicKey, priv)
	if err != nil {
		return generatedKey{}, fmt.Errorf("self-sign certificate: %w", err)
	}
	certPEM := string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
	fp, err := x509Fingerprint(certPEM)
	if err != nil {
		return generatedKey{}, err
	}
	privDER, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return generatedKey{}, fmt.Errorf("encode private key: %w", err)
	}
	privPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: privDER})
	return generatedKey{publicKey: certPEM, privateKey: string(privPEM), fingerprint: fp}, nil
}

// generateKey makes a keypair of type typ for userID.
func generateKey(typ, userID string, now time.Time) (generatedKey, error) {
	if typ == keypairX509 {
		return generateX509Key(userID, now)
	}
	return generateSSHKey()
}

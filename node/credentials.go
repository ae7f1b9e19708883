package node

import (
	"bytes"
	"fmt"
	"os"
	"slices"
	"strings"
)

// Environment variables a node reads its client credential from when the
// configuration gives neither the value nor a file: flags show in the
// process list (ps), files and the environment do not.
const (
	// EnvToken is read for the token when no token, token_file or user
	// is configured.
	EnvToken = "FLUX_TOKEN"
	// EnvPassword is read for the password of user when neither password
	// nor password_file is configured.
	EnvPassword = "FLUX_PASSWORD"
)

// Credentials returns the NATS client credential of the configuration:
// the token (Token, else the content of TokenFile, else $FLUX_TOKEN unless
// a user is configured), or the user and its password (Password, else the
// content of PasswordFile, else $FLUX_PASSWORD). White space around a
// file's or the environment's value is trimmed. err reports a file that
// cannot be read.
func (c Config) Credentials() (token, user, password string, err error) {
	token, err = secretValue(c.Token, c.TokenFile, "token_file (--token-file)", EnvToken, c.User == "")
	if err != nil {
		return "", "", "", err
	}
	password, err = secretValue(c.Password, c.PasswordFile, "password_file (--password-file)", EnvPassword, c.User != "")
	if err != nil {
		return "", "", "", err
	}
	return token, c.User, password, nil
}

// secretValue is value, else the content of file, else the environment
// variable env (when useEnv).
func secretValue(value, file, what, env string, useEnv bool) (string, error) {
	switch {
	case value != "":
		return value, nil
	case file != "":
		b, err := os.ReadFile(file)
		if err != nil {
			return "", fmt.Errorf("%w: %s: %w", ErrInvalidConfig, what, err)
		}
		return string(bytes.TrimSpace(b)), nil
	case useEnv:
		return strings.TrimSpace(os.Getenv(env)), nil
	}
	return "", nil
}

// withCredentials returns c with Token and Password filled in from their
// files or the environment (Credentials).
func (c Config) withCredentials() (Config, error) {
	token, _, password, err := c.Credentials()
	if err != nil {
		return c, err
	}
	c.Token, c.Password = token, password
	return c, nil
}

// ClientUser is a client of the embedded server with a NATS user of its
// own (client_users in the YAML file). Like the shared credential it may
// publish requests on flux.v1.> and $SRV.>, but it may subscribe only to
// its own inbox prefix, so that no client reads another's replies; it
// must connect with that prefix (nats.go: nats.CustomInboxPrefix, or
// client.InboxPrefix; nats.js: the inboxPrefix connection option).
type ClientUser struct {
	// User is the NATS user name: 1 to 64 of A-Z a-z 0-9 _ -.
	User string `yaml:"user"`
	// PasswordFile is a file holding its password; PasswordEnv names an
	// environment variable holding it instead. One of them is required.
	PasswordFile string `yaml:"password_file"`
	PasswordEnv  string `yaml:"password_env"`
	// InboxPrefix is the prefix of its reply subjects
	// (DefaultUserInboxPrefix(User) when empty); it may subscribe to
	// InboxPrefix.> only.
	InboxPrefix string `yaml:"inbox_prefix"`
}

// DefaultUserInboxPrefix is a client user's inbox prefix unless
// configured: _INBOX_<user>, outside _INBOX.> (the shared credential's
// inboxes) and outside every other user's.
func DefaultUserInboxPrefix(user string) string { return "_INBOX_" + user }

func (u ClientUser) inboxPrefix() string {
	if u.InboxPrefix == "" {
		return DefaultUserInboxPrefix(u.User)
	}
	return u.InboxPrefix
}

// replyPrefixes are the reply subjects the node answers: ReplyPrefixes
// (DefaultReplyPrefixes when empty) and every client user's inbox prefix,
// whose requests would otherwise go unanswered.
func (c Config) replyPrefixes() []string {
	p := c.ReplyPrefixes
	if len(p) == 0 {
		p = DefaultReplyPrefixes
	}
	p = slices.Clone(p)
	for _, u := range c.ClientUsers {
		p = append(p, u.inboxPrefix()+".")
	}
	return p
}

func (u ClientUser) password() (string, error) {
	if u.PasswordFile != "" {
		return secretValue("", u.PasswordFile, fmt.Sprintf("client_users %q: password_file", u.User), "", false)
	}
	return strings.TrimSpace(os.Getenv(u.PasswordEnv)), nil
}

// validateClientUsers reports the problems of client_users.
func (c Config) validateClientUsers() []error {
	var problems []error
	bad := func(format string, args ...any) {
		problems = append(problems, fmt.Errorf("%w: client_users: %s", ErrInvalidConfig, fmt.Sprintf(format, args...)))
	}
	if len(c.ClientUsers) > 0 && c.NATSURL != "" {
		bad("they are users of the embedded server; with nats_url (--nats-url) give clients users in that deployment (docs/PROTOCOL.md)")
	}
	users, prefixes := map[string]bool{}, map[string]string{}
	for _, u := range c.ClientUsers {
		switch {
		case !validToken(u.User):
			bad("user %q: want 1 to 64 of A-Z a-z 0-9 _ -", u.User)
			continue
		case users[u.User] || u.User == c.User || u.User == nodeUserName:
			bad("user %q given twice (or as user, or reserved)", u.User)
		}
		users[u.User] = true
		p := u.inboxPrefix()
		if !validInboxPrefix(p) {
			bad("user %q: inbox_prefix %q: want tokens of A-Z a-z 0-9 _ - separated by dots, not under _INBOX, _FLUX, flux or $", u.User, p)
		} else if other, ok := prefixes[p]; ok {
			bad("users %q and %q share the inbox prefix %q: each would read the other's replies", other, u.User, p)
		} else if shared := sharedInboxes(c); slices.ContainsFunc(shared, func(s string) bool { return strings.HasPrefix(p+".", strings.TrimSuffix(s, ">")) }) {
			bad("user %q: inbox_prefix %q is under reply_prefixes %v, where every client of the shared credential may subscribe", u.User, p, shared)
		}
		prefixes[p] = u.User
		if (u.PasswordFile == "") == (u.PasswordEnv == "") {
			bad("user %q: give password_file or password_env (one of them)", u.User)
			continue
		}
		if pw, err := u.password(); err != nil {
			problems = append(problems, err)
		} else if pw == "" {
			bad("user %q: empty password", u.User)
		}
	}
	return problems
}

func validToken(s string) bool {
	if len(s) == 0 || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// validInboxPrefix: literal subject tokens, outside the subjects whose
// subscription would let a client read others' replies or the service's
// traffic.
func validInboxPrefix(p string) bool {
	for _, t := range strings.Split(p, ".") {
		if !validToken(t) {
			return false
		}
	}
	first := strings.SplitN(p, ".", 2)[0]
	return first != DefaultInboxPrefix && first != "_FLUX" && first != "flux"
}

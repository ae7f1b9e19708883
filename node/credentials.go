package node

import (
	"bytes"
	"fmt"
	"os"
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

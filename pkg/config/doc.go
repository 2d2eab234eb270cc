// Package config owns the balancer's settings: their defaults, the YAML file
// given with -config, the command-line flags, and validation.
//
// Precedence is flags over file over defaults. Every setting is a flag and a
// YAML key of the same name, with dashes in the flag where the key has
// underscores (-health-path, health_path). Durations use Go syntax ("1s",
// "250ms").
//
// Errors name the setting at fault, and for a file the file; callers exit
// with status 2 on any error from Parse. The package does not start anything
// and holds no global state.
package config

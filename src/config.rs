//! Configuration: defaults < YAML file < environment, validated once at start.

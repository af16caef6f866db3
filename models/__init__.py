"""Domain models: enums, Temporal payloads, HTTP schemas, SQL tables and the policy."""

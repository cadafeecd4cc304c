//! Integration tests: retries, pulls and interruption (being written).

//! Event domain: parsing, tenant splice, ids, topics and filters. Pure: no I/O.

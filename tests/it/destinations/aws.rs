//! aws destinations against the real service: filled by the aws type's work.

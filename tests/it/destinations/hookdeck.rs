//! hookdeck destinations against the real service: filled by the hookdeck type's work.

//! job (under construction).

//! query (under construction).

//! content (under construction).

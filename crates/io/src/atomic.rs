//! Atomic writes and output-path checks (to be written).

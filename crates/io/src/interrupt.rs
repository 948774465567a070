//! Signal handling and cleanup (to be written).

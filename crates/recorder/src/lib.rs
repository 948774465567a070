//! placeholder: the LD_PRELOAD recorder (issue 4).

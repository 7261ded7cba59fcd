//! id_block (in progress).

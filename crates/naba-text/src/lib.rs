//! naba-text (work in progress)

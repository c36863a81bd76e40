//! punktfunk-net (being written).

//! The seed corpora of the core's fuzz targets (`fuzz/corpus/<target>/`), run through the
//! targets' own bodies (`punktfunk_core::fuzzing`), so `cargo test` exercises every seed without
//! cargo-fuzz. A seed whose name starts with `valid-` must also be accepted by what its target
//! parses.

use punktfunk_core::fuzzing::{self, replay};

#[test]
fn header_corpus() {
    replay("header", fuzzing::header);
}

#[test]
fn input_corpus() {
    replay("input", fuzzing::input);
}

#[test]
fn fec_decode_corpus() {
    replay("fec_decode", fuzzing::fec_decode);
}

#[test]
fn reassembler_corpus() {
    replay("reassembler", fuzzing::reassembler);
}

#[test]
fn p1_host_control_corpus() {
    replay("p1_host_control", fuzzing::p1_host_control);
}

#[test]
fn p1_pairing_corpus() {
    replay("p1_pairing", fuzzing::p1_pairing);
}

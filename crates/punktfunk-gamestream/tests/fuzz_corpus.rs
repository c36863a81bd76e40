//! The seed corpora of the GameStream fuzz targets (`fuzz/corpus/<target>/`), run through the
//! targets' own bodies (`punktfunk_gamestream::fuzzing`), so `cargo test` exercises every seed
//! without cargo-fuzz. A seed whose name starts with `valid-` must also be accepted by what its
//! target parses.

use punktfunk_core::fuzzing::replay;
use punktfunk_gamestream::fuzzing;

#[test]
fn rtsp_corpus() {
    replay("rtsp", fuzzing::rtsp);
}

#[test]
fn nvhttp_request_corpus() {
    replay("nvhttp_request", fuzzing::nvhttp_request);
}

#[test]
fn nvhttp_query_corpus() {
    replay("nvhttp_query", fuzzing::nvhttp_query);
}

#[test]
fn gs_control_corpus() {
    replay("gs_control", fuzzing::gs_control);
}

#[test]
fn gs_control_session_corpus() {
    replay("gs_control_session", fuzzing::gs_control_session);
}

#[test]
fn gs_media_corpus() {
    replay("gs_media", fuzzing::gs_media);
}

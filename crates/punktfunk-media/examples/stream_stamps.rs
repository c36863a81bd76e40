//! Decodes a stream file written by `punktfunk-client --out` and reports whether every
//! picture's stamp reads back in sequence: `cargo run --release -p punktfunk-media --example
//! stream_stamps -- FILE`.
fn main() {
    let Some(path) = std::env::args().nth(1) else {
        eprintln!("usage: stream_stamps FILE");
        std::process::exit(2);
    };
    match punktfunk_media::probe_stream_file(std::path::Path::new(&path)) {
        Ok(i) => {
            println!(
                "{}: {} {}x{}, {} pictures, {} stamps in sequence, {} jumps ahead, {} backwards, {} illegible",
                path,
                i.codec,
                i.width,
                i.height,
                i.frames,
                i.stamps_in_sequence,
                i.stamp_jumps,
                i.stamps_backwards,
                i.stamps_illegible
            );
            for (pos, stamp) in &i.stamp_breaks {
                println!("  picture {pos}: stamp {stamp:?}");
            }
        }
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(1);
        }
    }
}

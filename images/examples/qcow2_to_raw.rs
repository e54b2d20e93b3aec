//! `qcow2_to_raw IN.qcow2 OUT.raw`: corral's in-process qcow2 → sparse raw conversion alone,
//! for `bench/images` (compared with `qemu-img convert -O raw`).

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 3 {
        eprintln!("usage: qcow2_to_raw IN.qcow2 OUT.raw");
        std::process::exit(2);
    }
    match images::convert::qcow2_to_raw(args[1].as_ref(), args[2].as_ref(), u64::MAX) {
        Ok(size) => println!("{size}"),
        Err(e) => {
            eprintln!("qcow2_to_raw: {e}");
            std::process::exit(1);
        }
    }
}

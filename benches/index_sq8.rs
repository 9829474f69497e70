//! IVF_SQ8 against faiss-cpu's `IndexIVFScalarQuantizer(QT_8bit)` on the same data, alternating.
//!
//! ```sh
//! python3 -m venv .venv && .venv/bin/pip install faiss-cpu numpy
//! MISHARDS_BENCH_PYTHON=.venv/bin/python cargo bench --bench index_sq8 -- [options]
//! ```
//!
//! Clustered data as `benches/index.rs` generates it (same seed handling, so the same vectors),
//! written as raw little-endian files for `benches/sq8_baseline.py`. Ours is built, then faiss
//! (kept running); then for each nprobe ours is timed, then faiss, so both see the same machine
//! load. Each timing is a batch of all queries on all cores, median of `--reps` after a warm-up.
//! Output: CSV lines `build,<ours|anchor>,<seconds>` and
//! `curve,<ours|anchor>,<nprobe>,<recall@k>,<qps>`, then a ratio table.
//! Options (defaults in brackets): `--rows N` [200000] `--dim D` [128] `--nq N` [1000] `--k K`
//! [10] `--nlist N` [1024] `--nprobe LIST` [1,2,4,8,16,32,64] `--centers N` [1000] `--noise S`
//! [1.0] `--seed N` [42] `--metric l2|ip` [l2] `--reps N` [5] `--build-reps N` [1] `--no-anchor`
//! `--index-seed N` our build seed [--seed] `--anchor-seed N` faiss's k-means seed [1234, its
//! default] (recall at small nprobe moves by a few points with the k-means seed, on both sides)
//! `--keep DIR` (write the data files there and keep them) `--flat` (also print IVF_FLAT's recall
//! per nprobe, same lists: `flat,ours,<nprobe>,<recall@k>`, to tell coarse from code losses).

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use mishards::node::index::{IvfFlat, IvfSq8, IvfSq8Params, IvfSq8Search, Metric, search_flat};
use mishards::rng::SplitMix64;

struct Args {
    rows: usize,
    dim: usize,
    nq: usize,
    k: usize,
    nlist: usize,
    nprobes: Vec<usize>,
    centers: usize,
    noise: f32,
    seed: u64,
    metric: Metric,
    reps: usize,
    build_reps: usize,
    anchor: bool,
    keep: Option<PathBuf>,
    flat: bool,
    index_seed: Option<u64>,
    anchor_seed: u64,
}

fn parse_args() -> Args {
    let mut a = Args {
        rows: 200_000,
        dim: 128,
        nq: 1000,
        k: 10,
        nlist: 1024,
        nprobes: vec![1, 2, 4, 8, 16, 32, 64],
        centers: 1000,
        noise: 1.0,
        seed: 42,
        metric: Metric::L2,
        reps: 5,
        build_reps: 1,
        anchor: true,
        keep: None,
        flat: false,
        index_seed: None,
        anchor_seed: 1234,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next().unwrap_or_else(|| {
                eprintln!("{flag} needs a value");
                std::process::exit(2)
            })
        };
        fn num<T: std::str::FromStr>(v: &str) -> T {
            v.parse().unwrap_or_else(|_| {
                eprintln!("not a number: {v}");
                std::process::exit(2)
            })
        }
        match flag.as_str() {
            "--rows" => a.rows = num(&value()),
            "--dim" => a.dim = num(&value()),
            "--nq" => a.nq = num(&value()),
            "--k" => a.k = num(&value()),
            "--nlist" => a.nlist = num(&value()),
            "--nprobe" => a.nprobes = value().split(',').map(num).collect(),
            "--centers" => a.centers = num(&value()),
            "--noise" => a.noise = num(&value()),
            "--seed" => a.seed = num(&value()),
            "--metric" => {
                a.metric = match value().as_str() {
                    "l2" => Metric::L2,
                    "ip" => Metric::Ip,
                    m => {
                        eprintln!("--metric: l2 or ip, not {m}");
                        std::process::exit(2)
                    }
                }
            }
            "--reps" => a.reps = num(&value()),
            "--build-reps" => a.build_reps = num(&value()),
            "--no-anchor" => a.anchor = false,
            "--keep" => a.keep = Some(PathBuf::from(value())),
            "--flat" => a.flat = true,
            "--index-seed" => a.index_seed = Some(num(&value())),
            "--anchor-seed" => a.anchor_seed = num(&value()),
            "--bench" => {}
            other => {
                eprintln!("unknown option {other} (see the doc comment in benches/index_sq8.rs)");
                std::process::exit(2)
            }
        }
    }
    a
}

/// The generator of `benches/index.rs` (cosine half of Box–Muller), so the data is the same.
struct Rng(SplitMix64);

impl Rng {
    fn normal(&mut self) -> f32 {
        let u1 = 1.0 - self.0.next_f64();
        let u2 = self.0.next_f64();
        ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
    }
    fn normals(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.normal()).collect()
    }
}

fn clustered(rng: &mut Rng, centers: &[f32], n: usize, dim: usize, noise: f32) -> Vec<f32> {
    let nc = centers.len() / dim;
    let mut out = Vec::with_capacity(n * dim);
    for _ in 0..n {
        let c = rng.0.below(nc as u64) as usize;
        for d in 0..dim {
            out.push(centers[c * dim + d] + noise * rng.normal());
        }
    }
    out
}

fn write_raw<T: Copy, const N: usize>(path: &Path, xs: &[T], le: impl Fn(T) -> [u8; N]) {
    let bytes: Vec<u8> = xs.iter().flat_map(|&x| le(x)).collect();
    std::fs::write(path, bytes).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

fn recall(got: &[i64], exact: &[i64], k: usize) -> f64 {
    let mut hit = 0usize;
    for (g, e) in got.chunks(k).zip(exact.chunks(k)) {
        hit += g.iter().filter(|id| **id != -1 && e.contains(id)).count();
    }
    hit as f64 / exact.len().max(1) as f64
}

/// faiss, running: built, then answering one nprobe at a time.
struct Anchor {
    child: std::process::Child,
    out: BufReader<std::process::ChildStdout>,
}

impl Anchor {
    fn start(a: &Args, dir: &Path) -> Option<(Anchor, Vec<String>)> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let python = std::env::var("MISHARDS_BENCH_PYTHON")
            .map(PathBuf::from)
            .unwrap_or_else(|_| root.join(".venv/bin/python"));
        let metric = if a.metric == Metric::L2 { "l2" } else { "ip" };
        let mut child = Command::new(&python)
            .arg(root.join("benches/sq8_baseline.py"))
            .args(["--dir", &dir.display().to_string()])
            .args(["--dim", &a.dim.to_string(), "--k", &a.k.to_string()])
            .args(["--nlist", &a.nlist.to_string(), "--metric", metric])
            .args(["--reps", &a.reps.to_string()])
            .args(["--build-reps", &a.build_reps.to_string()])
            .args(["--seed", &a.anchor_seed.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| eprintln!("could not run {}: {e}", python.display()))
            .ok()?;
        let mut out = BufReader::new(child.stdout.take()?);
        let mut head = Vec::new();
        loop {
            let mut line = String::new();
            if out.read_line(&mut line).ok()? == 0 {
                eprintln!("faiss anchor exited early");
                return None;
            }
            let line = line.trim().to_string();
            let done = line.starts_with("memory_bytes");
            head.push(line);
            if done {
                break;
            }
        }
        Some((Anchor { child, out }, head))
    }

    /// (recall, qps median, qps best) at `nprobe`.
    fn run(&mut self, nprobe: usize) -> Option<(f64, f64, f64)> {
        let stdin = self.child.stdin.as_mut()?;
        writeln!(stdin, "nprobe {nprobe}").ok()?;
        stdin.flush().ok()?;
        let mut line = String::new();
        self.out.read_line(&mut line).ok()?;
        let f: Vec<f64> = line
            .split_whitespace()
            .skip(3)
            .filter_map(|v| v.parse().ok())
            .collect();
        (f.len() == 3).then(|| (f[0], f[1], f[2]))
    }
}

impl Drop for Anchor {
    fn drop(&mut self) {
        if let Some(stdin) = self.child.stdin.as_mut() {
            let _ = writeln!(stdin, "quit");
        }
        let _ = self.child.wait();
    }
}

fn main() {
    let a = parse_args();
    let (dim, k) = (a.dim, a.k);
    let tmp = tempfile::tempdir().expect("temp dir");
    let dir = match &a.keep {
        Some(d) => {
            std::fs::create_dir_all(d).expect("create --keep dir");
            d.as_path()
        }
        None => tmp.path(),
    };
    let mut rng = Rng(SplitMix64::new(a.seed ^ 0x1F1F));
    let centers = rng.normals(a.centers * dim);
    let data = clustered(&mut rng, &centers, a.rows, dim, a.noise);
    let queries = clustered(&mut rng, &centers, a.nq, dim, a.noise);
    let ids: Vec<i64> = (0..a.rows as i64).collect();
    let exact = search_flat(&queries, &data, &ids, dim, k, a.metric, None);
    write_raw(&dir.join("ivf_base.f32"), &data, f32::to_le_bytes);
    write_raw(&dir.join("ivf_query.f32"), &queries, f32::to_le_bytes);
    write_raw(&dir.join("ivf_gt.i64"), &exact.ids, i64::to_le_bytes);
    println!(
        "# IVF_SQ8: {} x {dim} around {} centres, noise {}, {} queries, k {k}, nlist {}, {:?}, \
         data seed {}, index seed {}, faiss k-means seed {}; {} rayon threads; loadavg {}",
        a.rows,
        a.centers,
        a.noise,
        a.nq,
        a.nlist,
        a.metric,
        a.seed,
        a.index_seed.unwrap_or(a.seed),
        a.anchor_seed,
        rayon::current_num_threads(),
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );

    let index_seed = a.index_seed.unwrap_or(a.seed);
    let params = IvfSq8Params {
        nlist: a.nlist,
        seed: index_seed,
    };
    let mut index = None;
    for _ in 0..a.build_reps.max(1) {
        let t = Instant::now();
        index = Some(IvfSq8::build(&data, &ids, dim, a.metric, &params).expect("build"));
        println!("build,ours,{:.3}", t.elapsed().as_secs_f64());
    }
    let Some(index) = index else { return };
    let raw = (a.rows * dim * 4) as f64;
    println!(
        "# ours memory_bytes {} ({:.3} of the raw floats)",
        index.memory_bytes(),
        index.memory_bytes() as f64 / raw
    );
    if a.flat {
        let flat = IvfFlat::build(&data, &ids, dim, a.nlist, a.metric, index_seed);
        for &nprobe in &a.nprobes {
            let got = flat.search(&queries, k, nprobe, None);
            println!("flat,ours,{nprobe},{:.4}", recall(&got.ids, &exact.ids, k));
        }
    }
    let mut anchor = None;
    if a.anchor
        && let Some((an, head)) = Anchor::start(&a, dir)
    {
        for line in head {
            match line.strip_prefix("build ") {
                Some(s) => println!("build,anchor,{s}"),
                None => println!("# anchor {line}"),
            }
        }
        anchor = Some(an);
    }
    let mut table = Vec::new();
    for &nprobe in &a.nprobes {
        let search = IvfSq8Search { nprobe };
        let run = || index.search(&queries, k, &search, None).expect("search");
        let got = run();
        let mut times: Vec<f64> = (0..a.reps.max(1))
            .map(|_| {
                let t = Instant::now();
                std::hint::black_box(run());
                t.elapsed().as_secs_f64()
            })
            .collect();
        times.sort_by(f64::total_cmp);
        let qps = a.nq as f64 / times[times.len() / 2];
        let r = recall(&got.ids, &exact.ids, k);
        println!("curve,ours,{nprobe},{r:.4},{qps:.0}");
        let theirs = anchor.as_mut().and_then(|an| an.run(nprobe));
        if let Some((ar, aqps, _)) = theirs {
            println!("curve,anchor,{nprobe},{ar:.4},{aqps:.0}");
        }
        table.push((nprobe, r, qps, theirs));
    }
    println!("# nprobe | recall ours / faiss | QPS ours / faiss | ratio");
    for (nprobe, r, qps, theirs) in table {
        match theirs {
            Some((ar, aqps, _)) => println!(
                "# {nprobe:>6} | {r:.4} / {ar:.4} | {qps:>8.0} / {aqps:>8.0} | {:.2}x",
                qps / aqps
            ),
            None => println!("# {nprobe:>6} | {r:.4} / - | {qps:>8.0} / - | -"),
        }
    }
}

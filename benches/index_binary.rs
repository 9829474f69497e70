//! BIN_FLAT and BIN_IVF_FLAT (Hamming) against faiss-cpu's IndexBinaryFlat / IndexBinaryIVF on the
//! same data, run alternately.
//!
//! ```sh
//! python3 -m venv /work/venv-h && /work/venv-h/bin/pip install faiss-cpu numpy
//! MISHARDS_BENCH_PYTHON=/work/venv-h/bin/python cargo bench --bench index_binary -- [options]
//! ```
//!
//! Data: the sign bits of clustered Gaussian floats (`--centers` centres ~ N(0, 1)^dim, points =
//! centre + `--noise` · N(0, 1)^dim, bit set where the float is > 0), or uniform random bits with
//! `--random`. Queries come from the same distribution. Each round times ours, then runs
//! `benches/binary_baseline.py` on the same files (the faiss IVF index is trained in round 1 and
//! reloaded after). Options [defaults]: `--rows N` [200000] `--dim-bits D` [512] `--flat-nq N`
//! [100] `--ivf-nq N` [1000] `--k K` [10] `--nlist N` [1024] `--nprobe LIST` [1,2,4,8,16,32,64]
//! `--centers N` [1000] `--noise S` [1.0] `--reps N` [3] `--single N` [20] `--rounds N` [2]
//! `--seed N` [42] `--train-seed N` (k-means seed of both sides) [ours: the data seed; faiss:
//! its default 1234] `--random` `--skip-flat` `--skip-ivf` `--no-faiss`. faiss also runs an
//! IndexBinaryIVF on our centroids ("anchor_same_lists": the same lists, so recall is equal by
//! construction and the comparison is speed alone, free of either side's k-means luck).
//!
//! Output: CSV lines `curve,<ours|anchor|anchor_same_lists>,<param>,<recall>,<qps>` (param `flat_nq1`,
//! `flat_nq100` or an nprobe), `build,<ours|anchor>,<seconds>`, then the ratios: FLAT QPS ours /
//! faiss, and for IVF our QPS over faiss's QPS interpolated (log-linear) to our recall on its
//! nprobe curve. Recall is tie-aware (see `tie_recall`).

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use mishards::node::index::{
    BinIvfFlat, BinIvfParams, BinIvfSearch, BinaryMetric, search_binary_flat,
};
use mishards::rng::SplitMix64;

struct Args {
    rows: usize,
    dim_bits: usize,
    flat_nq: usize,
    ivf_nq: usize,
    k: usize,
    nlist: usize,
    nprobes: Vec<usize>,
    centers: usize,
    noise: f32,
    reps: usize,
    single: usize,
    rounds: usize,
    seed: u64,
    train_seed: Option<u64>,
    random: bool,
    skip_flat: bool,
    skip_ivf: bool,
    no_faiss: bool,
}

fn parse_args() -> Args {
    let mut a = Args {
        rows: 200_000,
        dim_bits: 512,
        flat_nq: 100,
        ivf_nq: 1000,
        k: 10,
        nlist: 1024,
        nprobes: vec![1, 2, 4, 8, 16, 32, 64],
        centers: 1000,
        noise: 1.0,
        reps: 3,
        single: 20,
        rounds: 2,
        seed: 42,
        train_seed: None,
        random: false,
        skip_flat: false,
        skip_ivf: false,
        no_faiss: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next().unwrap_or_else(|| {
                eprintln!("{flag} needs a value");
                std::process::exit(2)
            })
        };
        fn num<T: std::str::FromStr>(v: String) -> T {
            v.parse().unwrap_or_else(|_| {
                eprintln!("not a number: {v}");
                std::process::exit(2)
            })
        }
        match flag.as_str() {
            "--rows" => a.rows = num(value()),
            "--dim-bits" => a.dim_bits = num(value()),
            "--flat-nq" => a.flat_nq = num(value()),
            "--ivf-nq" => a.ivf_nq = num(value()),
            "--k" => a.k = num(value()),
            "--nlist" => a.nlist = num(value()),
            "--nprobe" => a.nprobes = value().split(',').map(|s| num(s.to_string())).collect(),
            "--centers" => a.centers = num(value()),
            "--noise" => a.noise = num(value()),
            "--reps" => a.reps = num(value()),
            "--single" => a.single = num(value()),
            "--rounds" => a.rounds = num(value()),
            "--seed" => a.seed = num(value()),
            "--train-seed" => a.train_seed = Some(num(value())),
            "--random" => a.random = true,
            "--skip-flat" => a.skip_flat = true,
            "--skip-ivf" => a.skip_ivf = true,
            "--no-faiss" => a.no_faiss = true,
            "--bench" => {}
            other => {
                eprintln!(
                    "unknown option {other} (see the doc comment in benches/index_binary.rs)"
                );
                std::process::exit(2)
            }
        }
    }
    a
}

/// Seeded normals (SplitMix64 + Box–Muller, the cosine half), as benches/index.rs makes them.
struct Rng(SplitMix64);

impl Rng {
    fn normal(&mut self) -> f32 {
        let u1 = 1.0 - self.0.next_f64();
        let u2 = self.0.next_f64();
        ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
    }
}

/// `n` packed vectors: sign bits of points around `centers`, or random bits.
fn codes(rng: &mut Rng, a: &Args, centers: &[f32], n: usize) -> Vec<u8> {
    let (dim, code) = (a.dim_bits, a.dim_bits / 8);
    let mut out = vec![0u8; n * code];
    for row in out.chunks_mut(code) {
        if a.random {
            for b in row.iter_mut() {
                *b = rng.0.next_u64() as u8;
            }
            continue;
        }
        let c = rng.0.below(a.centers as u64) as usize;
        for i in 0..dim {
            if centers[c * dim + i] + a.noise * rng.normal() > 0.0 {
                row[i / 8] |= 1 << (i % 8);
            }
        }
    }
    out
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return f64::NAN;
    }
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Median seconds per run over `reps` runs after one warm-up.
fn time_runs<R>(reps: usize, mut f: impl FnMut() -> R) -> f64 {
    std::hint::black_box(f());
    median(
        (0..reps.max(1))
            .map(|_| {
                let t = Instant::now();
                std::hint::black_box(f());
                t.elapsed().as_secs_f64()
            })
            .collect(),
    )
}

/// Tie-aware recall@k against the exact distances `gt` (k per query): hits strictly closer than
/// the exact k-th distance, plus as many at that distance as the exact top-k holds.
fn tie_recall(dist: &[f32], gt: &[f32], k: usize) -> f64 {
    let mut hits = 0usize;
    for (d, g) in dist.chunks(k).zip(gt.chunks(k)) {
        let kth = g[k - 1];
        let less = d.iter().filter(|&&x| x < kth).count();
        let eq = d.iter().filter(|&&x| x == kth).count();
        hits += less + eq.min(g.iter().filter(|&&x| x == kth).count());
    }
    hits as f64 / gt.len().max(1) as f64
}

fn run_faiss(a: &Args, dir: &Path, reuse: bool, ours: Option<&Path>) -> HashMap<String, f64> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let python = std::env::var("MISHARDS_BENCH_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from("/work/venv-h/bin/python"));
    let nprobes: Vec<String> = a.nprobes.iter().map(|n| n.to_string()).collect();
    let mut cmd = Command::new(&python);
    cmd.arg(root.join("benches/binary_baseline.py"))
        .args(["--dir", &dir.display().to_string()])
        .args(["--dim", &a.dim_bits.to_string(), "--k", &a.k.to_string()])
        .args(["--flat-nq", &a.flat_nq.to_string()])
        .args(["--single", &a.single.to_string()])
        .args(["--nlist", &a.nlist.to_string()])
        .args(["--nprobe", &nprobes.join(",")])
        .args(["--reps", &a.reps.to_string()]);
    if let Some(seed) = a.train_seed {
        cmd.args(["--train-seed", &seed.to_string()]);
    }
    if reuse {
        cmd.arg("--reuse-index");
    }
    if let Some(path) = ours {
        cmd.args(["--centroids", &path.display().to_string()]);
    }
    if a.skip_flat {
        cmd.arg("--skip-flat");
    }
    if a.skip_ivf {
        cmd.arg("--skip-ivf");
    }
    let out = match cmd.output() {
        Ok(o) if o.status.success() => {
            eprint!("{}", String::from_utf8_lossy(&o.stderr));
            o
        }
        Ok(o) => {
            eprintln!(
                "faiss baseline failed:\n{}",
                String::from_utf8_lossy(&o.stderr)
            );
            return HashMap::new();
        }
        Err(e) => {
            eprintln!(
                "could not run {}: {e} (set MISHARDS_BENCH_PYTHON)",
                python.display()
            );
            return HashMap::new();
        }
    };
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(' ')?;
            if k.starts_with("faiss_") {
                eprintln!("{l}");
            }
            Some((k.to_string(), v.trim().parse().ok()?))
        })
        .collect()
}

/// Smallest, median, largest list and the number of empty ones (`sizes` sorted).
fn list_stats(sizes: &[usize]) -> String {
    let n = sizes.len();
    let empty = sizes.iter().filter(|&&s| s == 0).count();
    format!(
        "min {} p50 {} p99 {} max {} empty {empty}",
        sizes[0],
        sizes[n / 2],
        sizes[n * 99 / 100],
        sizes[n - 1]
    )
}

/// Anchor QPS at `recall` on its (recall, qps) curve, log-linear between neighbours; `None`
/// outside the curve's recall range.
fn interpolate(curve: &[(f64, f64)], recall: f64) -> Option<f64> {
    let mut pts: Vec<(f64, f64)> = curve.to_vec();
    pts.sort_by(|x, y| x.0.total_cmp(&y.0));
    for w in pts.windows(2) {
        let ((r0, q0), (r1, q1)) = (w[0], w[1]);
        if (r0..=r1).contains(&recall) {
            if r1 == r0 {
                return Some(q0.max(q1));
            }
            let t = (recall - r0) / (r1 - r0);
            return Some((q0.ln() + t * (q1.ln() - q0.ln())).exp());
        }
    }
    pts.iter().find(|p| p.0 == recall).map(|p| p.1)
}

fn main() {
    let a = parse_args();
    let (dim, k, code) = (a.dim_bits, a.k, a.dim_bits / 8);
    assert!(
        dim.is_multiple_of(8) && dim > 0,
        "--dim-bits must be a positive multiple of 8"
    );
    let tmp = tempfile::tempdir().expect("temp dir");
    let dir = tmp.path();
    let t = Instant::now();
    let mut rng = Rng(SplitMix64::new(a.seed));
    let centers: Vec<f32> = (0..a.centers * dim).map(|_| rng.normal()).collect();
    let base = codes(&mut rng, &a, &centers, a.rows);
    let nq = a.ivf_nq.max(a.flat_nq).max(a.single);
    let queries = codes(&mut rng, &a, &centers, nq);
    let ids: Vec<i64> = (0..a.rows as i64).collect();
    let gt = search_binary_flat(&queries, &base, &ids, dim, k, BinaryMetric::Hamming, None);
    fs::write(dir.join("base.u8"), &base).expect("write base");
    fs::write(dir.join("query.u8"), &queries).expect("write queries");
    let gt_i32: Vec<u8> = gt
        .distances
        .iter()
        .flat_map(|&d| (d as i32).to_le_bytes())
        .collect();
    fs::write(dir.join("gt_dist.i32"), gt_i32).expect("write gt");
    eprintln!(
        "data: {} rows × {dim} bits ({}), {nq} queries, made in {:.1}s; threads {}",
        a.rows,
        if a.random {
            "random"
        } else {
            "clustered sign bits"
        },
        t.elapsed().as_secs_f64(),
        rayon::current_num_threads()
    );

    let index = (!a.skip_ivf).then(|| {
        let t = Instant::now();
        let params = BinIvfParams {
            nlist: a.nlist,
            seed: a.train_seed.unwrap_or(a.seed),
        };
        let index = BinIvfFlat::build(&base, &ids, dim, BinaryMetric::Hamming, &params)
            .expect("valid parameters");
        let s = t.elapsed().as_secs_f64();
        println!("build,ours,{s:.2}");
        let mut sizes: Vec<usize> = (0..index.nlist()).map(|l| index.list_len(l)).collect();
        sizes.sort_unstable();
        eprintln!("ours lists: {}", list_stats(&sizes));
        let mut f = fs::File::create(dir.join("ours.index")).expect("create ours.index");
        index.write_to(&mut f).expect("write ours.index");
        index
    });

    // (curve, param) → per-round (recall, qps), for ours and the anchor.
    let mut ours: HashMap<String, Vec<(f64, f64)>> = HashMap::new();
    let mut anchor: HashMap<String, Vec<(f64, f64)>> = HashMap::new();
    // faiss on our centroids: the same lists, so the same recall at each nprobe.
    let mut same: HashMap<String, Vec<(f64, f64)>> = HashMap::new();
    let fq = &queries[..a.flat_nq * code];
    for round in 0..a.rounds {
        eprintln!(
            "round {} (load {})",
            round + 1,
            fs::read_to_string("/proc/loadavg")
                .unwrap_or_default()
                .trim()
        );
        if !a.skip_flat {
            let got = search_binary_flat(fq, &base, &ids, dim, k, BinaryMetric::Hamming, None);
            let r = tie_recall(&got.distances, &gt.distances[..a.flat_nq * k], k);
            let batch = time_runs(a.reps, || {
                search_binary_flat(fq, &base, &ids, dim, k, BinaryMetric::Hamming, None)
            });
            let singles: Vec<f64> = (0..a.single)
                .map(|i| {
                    time_runs(1, || {
                        let q = &queries[i * code..(i + 1) * code];
                        search_binary_flat(q, &base, &ids, dim, k, BinaryMetric::Hamming, None)
                    })
                })
                .collect();
            ours.entry("flat_nq1".into())
                .or_default()
                .push((r, 1.0 / median(singles)));
            ours.entry(format!("flat_nq{}", a.flat_nq))
                .or_default()
                .push((r, a.flat_nq as f64 / batch));
        }
        if let Some(index) = &index {
            let all = &queries[..a.ivf_nq * code];
            for &nprobe in &a.nprobes {
                let s = BinIvfSearch { nprobe };
                let got = index.search(all, k, &s, None).expect("search");
                let r = tie_recall(&got.distances, &gt.distances[..a.ivf_nq * k], k);
                let secs = time_runs(a.reps, || index.search(all, k, &s, None));
                ours.entry(nprobe.to_string())
                    .or_default()
                    .push((r, a.ivf_nq as f64 / secs));
            }
        }
        if a.no_faiss {
            continue;
        }
        let ours_index = dir.join("ours.index");
        let f = run_faiss(
            &a,
            dir,
            round > 0,
            index.is_some().then_some(ours_index.as_path()),
        );
        if let Some(b) = f.get("ivf_build") {
            println!("build,anchor,{b:.2}");
        }
        if let (Some(s), Some(b), Some(r)) = (
            f.get("flat_single"),
            f.get("flat_batch"),
            f.get("flat_recall"),
        ) {
            anchor
                .entry("flat_nq1".into())
                .or_default()
                .push((*r, 1.0 / s));
            anchor
                .entry(format!("flat_nq{}", a.flat_nq))
                .or_default()
                .push((*r, a.flat_nq as f64 / b));
        }
        for &nprobe in &a.nprobes {
            if let (Some(t), Some(r)) = (
                f.get(&format!("ivf_{nprobe}_batch")),
                f.get(&format!("ivf_{nprobe}_recall")),
            ) {
                anchor
                    .entry(nprobe.to_string())
                    .or_default()
                    .push((*r, a.ivf_nq as f64 / t));
            }
            if let (Some(t), Some(r)) = (
                f.get(&format!("same_{nprobe}_batch")),
                f.get(&format!("same_{nprobe}_recall")),
            ) {
                same.entry(nprobe.to_string())
                    .or_default()
                    .push((*r, a.ivf_nq as f64 / t));
            }
        }
    }

    // Per point: the recall (same every round) and the median QPS over rounds.
    let point = |v: &Vec<(f64, f64)>| (v[0].0, median(v.iter().map(|p| p.1).collect()));
    let mut params: Vec<String> = vec!["flat_nq1".into(), format!("flat_nq{}", a.flat_nq)];
    params.extend(a.nprobes.iter().map(|n| n.to_string()));
    for p in &params {
        for (side, m) in [
            ("ours", &ours),
            ("anchor", &anchor),
            ("anchor_same_lists", &same),
        ] {
            if let Some(v) = m.get(p) {
                let (r, q) = point(v);
                println!("curve,{side},{p},{r:.4},{q:.1}");
            }
        }
    }
    println!("# ratios (ours / faiss; per round in brackets)");
    for p in &params[..2] {
        if let (Some(o), Some(f)) = (ours.get(p), anchor.get(p)) {
            let per: Vec<String> = o
                .iter()
                .zip(f)
                .map(|(x, y)| format!("{:.2}", x.1 / y.1))
                .collect();
            println!("{p}: {:.2}x [{}]", point(o).1 / point(f).1, per.join(", "));
        }
    }
    let faiss_curve: Vec<(f64, f64)> = a
        .nprobes
        .iter()
        .filter_map(|n| anchor.get(&n.to_string()).map(point))
        .collect();
    for n in &a.nprobes {
        if let Some(o) = ours.get(&n.to_string()) {
            let (r, q) = point(o);
            let own = match interpolate(&faiss_curve, r) {
                Some(fq) => format!("{:.2}x faiss (own k-means) at equal recall", q / fq),
                None => "outside faiss's (own k-means) recall range".to_string(),
            };
            let lists = match same.get(&n.to_string()) {
                Some(s) => {
                    let per: Vec<String> = o
                        .iter()
                        .zip(s)
                        .map(|(x, y)| format!("{:.2}", x.1 / y.1))
                        .collect();
                    let (sr, sq) = point(s);
                    format!(
                        "{:.2}x faiss on our lists (recall {sr:.4}) [{}]",
                        q / sq,
                        per.join(", ")
                    )
                }
                None => String::new(),
            };
            println!("ivf nprobe {n} (recall {r:.4}): {own}; {lists}");
        }
    }
}

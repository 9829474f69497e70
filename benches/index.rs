//! FLAT and IVF_FLAT kernels against faiss-cpu, and HNSW against hnswlib, on the same data, side
//! by side.
//!
//! ```sh
//! benches/run-index-bench.sh            # installs faiss-cpu and hnswlib into .venv if needed, then:
//! cargo bench --bench index -- [options]
//! ```
//!
//! Generates seeded data (random normal for FLAT; clustered Gaussian for IVF), writes it as raw
//! little-endian f32 files into a temporary folder, times this crate's kernels, runs
//! `benches/faiss_baseline.py` (with `$MISHARDS_BENCH_PYTHON`, default `.venv/bin/python`) on the
//! same files and prints both with their ratios. Options (defaults in brackets):
//! `--rows N` [200000] `--dim D` [128] `--nq N` FLAT batch [100] `--ivf-nq N` [1000] `--k K` [10]
//! `--nlist N` [1024] `--nprobe N` [16] `--centers N` [1000] `--noise S` [1.0] `--reps N` [5]
//! `--build-reps N` IVF builds timed [2]
//! `--single N` single-query FLAT timings [20] `--seed N` [42] `--skip-flat` `--skip-ivf`
//! `--skip-hnsw` `--hnsw-m M` [16] `--hnsw-efc N` efConstruction [200] `--hnsw-ef LIST` search
//! ef values [16,32,64,128,256] `--no-faiss` (no faiss or hnswlib run) `--keep DIR` (write the
//! files to DIR and keep them).
//!
//! HNSW runs on the IVF data (clustered; L2), built once per side (`hnswlib_baseline.py` builds
//! with all cores, as hnswlib's `add_items` does by default); each ef is timed as one batch of
//! all queries on all cores. "At equal recall" compares our QPS with hnswlib's QPS interpolated
//! (log-linear) to our recall on its ef curve.

use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use mishards::node::index::{Hnsw, HnswParams, IvfFlat, Metric, TopK, search_flat};
use mishards::rng::SplitMix64;

struct Args {
    rows: usize,
    dim: usize,
    nq: usize,
    ivf_nq: usize,
    k: usize,
    nlist: usize,
    nprobe: usize,
    centers: usize,
    noise: f32,
    reps: usize,
    build_reps: usize,
    single: usize,
    seed: u64,
    skip_flat: bool,
    skip_ivf: bool,
    skip_hnsw: bool,
    hnsw_m: usize,
    hnsw_efc: usize,
    hnsw_efs: Vec<usize>,
    no_faiss: bool,
    keep: Option<PathBuf>,
}

fn parse_args() -> Args {
    let mut a = Args {
        rows: 200_000,
        dim: 128,
        nq: 100,
        ivf_nq: 1000,
        k: 10,
        nlist: 1024,
        nprobe: 16,
        centers: 1000,
        noise: 1.0,
        reps: 5,
        build_reps: 2,
        single: 20,
        seed: 42,
        skip_flat: false,
        skip_ivf: false,
        skip_hnsw: false,
        hnsw_m: 16,
        hnsw_efc: 200,
        hnsw_efs: vec![16, 32, 64, 128, 256],
        no_faiss: false,
        keep: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = |name: &str| -> String {
            it.next().unwrap_or_else(|| {
                eprintln!("{name} needs a value");
                std::process::exit(2)
            })
        };
        fn num<T: std::str::FromStr>(name: &str, v: String) -> T {
            v.parse().unwrap_or_else(|_| {
                eprintln!("{name}: not a number: {v}");
                std::process::exit(2)
            })
        }
        match flag.as_str() {
            "--rows" => a.rows = num("--rows", value("--rows")),
            "--dim" => a.dim = num("--dim", value("--dim")),
            "--nq" => a.nq = num("--nq", value("--nq")),
            "--ivf-nq" => a.ivf_nq = num("--ivf-nq", value("--ivf-nq")),
            "--k" => a.k = num("--k", value("--k")),
            "--nlist" => a.nlist = num("--nlist", value("--nlist")),
            "--nprobe" => a.nprobe = num("--nprobe", value("--nprobe")),
            "--centers" => a.centers = num("--centers", value("--centers")),
            "--noise" => a.noise = num("--noise", value("--noise")),
            "--reps" => a.reps = num("--reps", value("--reps")),
            "--build-reps" => a.build_reps = num("--build-reps", value("--build-reps")),
            "--single" => a.single = num("--single", value("--single")),
            "--seed" => a.seed = num("--seed", value("--seed")),
            "--skip-flat" => a.skip_flat = true,
            "--skip-ivf" => a.skip_ivf = true,
            "--skip-hnsw" => a.skip_hnsw = true,
            "--hnsw-m" => a.hnsw_m = num("--hnsw-m", value("--hnsw-m")),
            "--hnsw-efc" => a.hnsw_efc = num("--hnsw-efc", value("--hnsw-efc")),
            "--hnsw-ef" => {
                let v = value("--hnsw-ef");
                a.hnsw_efs = v
                    .split(',')
                    .map(|e| num("--hnsw-ef", e.to_string()))
                    .collect();
            }
            "--no-faiss" => a.no_faiss = true,
            "--keep" => a.keep = Some(PathBuf::from(value("--keep"))),
            // `cargo bench` passes --bench to every bench binary.
            "--bench" => {}
            other => {
                eprintln!("unknown option {other} (see the doc comment in benches/index.rs)");
                std::process::exit(2)
            }
        }
    }
    a
}

/// Seeded normal data: SplitMix64 + Box–Muller, one normal per pair of uniforms (the cosine half only:
/// the data behind the numbers in BENCHMARKS.md stays as it was).
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
    fn below(&mut self, n: usize) -> usize {
        self.0.below(n as u64) as usize
    }
}

/// Points around `centers` centres ~ N(0, 1)^dim: centre + noise · N(0, 1)^dim.
fn clustered(rng: &mut Rng, centers: &[f32], n: usize, dim: usize, noise: f32) -> Vec<f32> {
    let nc = centers.len() / dim;
    let mut out = Vec::with_capacity(n * dim);
    for _ in 0..n {
        let c = rng.below(nc);
        for d in 0..dim {
            out.push(centers[c * dim + d] + noise * rng.normal());
        }
    }
    out
}

fn write_raw<T: Copy, const N: usize>(path: &Path, xs: &[T], le: impl Fn(T) -> [u8; N]) {
    let mut bytes = Vec::with_capacity(xs.len() * N);
    for &x in xs {
        bytes.extend_from_slice(&le(x));
    }
    fs::write(path, bytes).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Median and best of a set of timings (seconds). The median is the headline; the best shows
/// what a run untouched by other processes on the machine gets.
#[derive(Clone, Copy)]
struct Stat {
    median: f64,
    best: f64,
}

impl Stat {
    fn of(v: Vec<f64>) -> Stat {
        let best = v.iter().copied().fold(f64::INFINITY, f64::min);
        Stat {
            median: median(v),
            best,
        }
    }
}

/// Seconds per run over `reps` runs after one warm-up.
fn time_runs<R>(reps: usize, mut f: impl FnMut() -> R) -> Stat {
    std::hint::black_box(f());
    Stat::of(
        (0..reps.max(1))
            .map(|_| {
                let t = Instant::now();
                std::hint::black_box(f());
                t.elapsed().as_secs_f64()
            })
            .collect(),
    )
}

/// Fraction of the exact top-k ids found, per query, averaged.
fn recall(got: &[i64], exact: &[i64], k: usize) -> f64 {
    let mut hit = 0usize;
    for (g, e) in got.chunks(k).zip(exact.chunks(k)) {
        hit += g.iter().filter(|id| **id != -1 && e.contains(id)).count();
    }
    hit as f64 / exact.len().max(1) as f64
}

fn loadavg() -> String {
    fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

fn run_faiss(a: &Args, dir: &Path) -> HashMap<String, String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let python = std::env::var("MISHARDS_BENCH_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|_| root.join(".venv/bin/python"));
    let mut cmd = Command::new(&python);
    cmd.arg(root.join("benches/faiss_baseline.py"))
        .args(["--dir", &dir.display().to_string()])
        .args(["--dim", &a.dim.to_string(), "--k", &a.k.to_string()])
        .args([
            "--nlist",
            &a.nlist.to_string(),
            "--nprobe",
            &a.nprobe.to_string(),
        ])
        .args([
            "--reps",
            &a.reps.to_string(),
            "--single",
            &a.single.to_string(),
        ]);
    if a.skip_flat {
        cmd.arg("--skip-flat");
    }
    if a.skip_ivf {
        cmd.arg("--skip-ivf");
    }
    eprintln!("running faiss baseline with {}", python.display());
    let out = match cmd.output() {
        Ok(o) => o,
        Err(e) => {
            eprintln!(
                "could not run {}: {e} (set MISHARDS_BENCH_PYTHON or use benches/run-index-bench.sh)",
                python.display()
            );
            return HashMap::new();
        }
    };
    if !out.status.success() {
        eprintln!(
            "faiss baseline failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        return HashMap::new();
    }
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            l.split_once(' ')
                .map(|(k, v)| (k.to_string(), v.trim().to_string()))
        })
        .collect()
}

struct Row {
    what: String,
    /// The faiss script's output key for the same measurement (`<key>` median, `<key>_best`).
    key: &'static str,
    ours: Stat,
    faiss: Option<Stat>,
    /// "s" (lower is better), "q/s" (higher is better) or "" (recall).
    unit: &'static str,
    target: &'static str,
    /// Minimum advantage to meet the target: faiss/ours for times, ours/faiss for rates.
    need: f64,
}

impl Row {
    fn time(what: String, key: &'static str, ours: Stat, target: &'static str, need: f64) -> Row {
        Row {
            what,
            key,
            ours,
            faiss: None,
            unit: "s",
            target,
            need,
        }
    }
}

fn main() {
    let a = parse_args();
    let (dim, k) = (a.dim, a.k);
    let tmp;
    let dir: PathBuf = match &a.keep {
        Some(d) => {
            fs::create_dir_all(d).expect("create --keep dir");
            d.clone()
        }
        None => {
            tmp = tempfile::tempdir().expect("temp dir");
            tmp.path().to_path_buf()
        }
    };
    #[cfg(target_arch = "x86_64")]
    let simd = if std::arch::is_x86_feature_detected!("avx2")
        && std::arch::is_x86_feature_detected!("fma")
    {
        "AVX2+FMA"
    } else {
        "portable"
    };
    #[cfg(not(target_arch = "x86_64"))]
    let simd = "portable";
    println!(
        "index bench: rows {} dim {dim} k {k}; {} rayon threads; kernel {simd}; loadavg {}; data in {}",
        a.rows,
        rayon::current_num_threads(),
        loadavg(),
        dir.display()
    );
    println!(
        "FLAT data: {} × {dim} N(0,1), {} queries. IVF data: {} × {dim} around {} centres ~N(0,1), noise σ = {}, \
         {} queries from the same clusters; nlist {}, nprobe {}; seed {}; {} reps, {} builds",
        a.rows,
        a.nq,
        a.rows,
        a.centers,
        a.noise,
        a.ivf_nq,
        a.nlist,
        a.nprobe,
        a.seed,
        a.reps,
        a.build_reps
    );
    let mut rows: Vec<Row> = Vec::new();
    let mut ours_flat_ids: Option<TopK> = None;

    if !a.skip_flat {
        let mut rng = Rng(SplitMix64::new(a.seed));
        let data = rng.normals(a.rows * dim);
        let queries = rng.normals(a.nq * dim);
        let ids: Vec<i64> = (0..a.rows as i64).collect();
        write_raw(&dir.join("flat_base.f32"), &data, f32::to_le_bytes);
        write_raw(&dir.join("flat_query.f32"), &queries, f32::to_le_bytes);
        let batch = time_runs(a.reps, || {
            search_flat(&queries, &data, &ids, dim, k, Metric::L2, None)
        });
        // nq = 1: each of the first `single` queries once (after a warm-up), median over queries.
        std::hint::black_box(search_flat(
            &queries[..dim],
            &data,
            &ids,
            dim,
            k,
            Metric::L2,
            None,
        ));
        let single = Stat::of(
            queries
                .chunks_exact(dim)
                .take(a.single)
                .map(|q| {
                    let t = Instant::now();
                    std::hint::black_box(search_flat(q, &data, &ids, dim, k, Metric::L2, None));
                    t.elapsed().as_secs_f64()
                })
                .collect(),
        );
        eprintln!(
            "ours FLAT: nq={} {:.4} s, nq=1 {:.5} s",
            a.nq, batch.median, single.median
        );
        ours_flat_ids = Some(search_flat(&queries, &data, &ids, dim, k, Metric::L2, None));
        rows.push(Row::time(
            format!("FLAT L2 search, nq={}", a.nq),
            "flat_batch",
            batch,
            "≥ 4× faster",
            4.0,
        ));
        rows.push(Row::time(
            "FLAT L2 search, nq=1".into(),
            "flat_single",
            single,
            "no slower",
            1.0,
        ));
    }

    // Clustered data, shared by IVF and HNSW (and by their baselines, through the files).
    let clustered_set = (!a.skip_ivf || !a.skip_hnsw).then(|| {
        let mut rng = Rng(SplitMix64::new(a.seed ^ 0x1F1F));
        let centers = rng.normals(a.centers * dim);
        let data = clustered(&mut rng, &centers, a.rows, dim, a.noise);
        let queries = clustered(&mut rng, &centers, a.ivf_nq, dim, a.noise);
        let ids: Vec<i64> = (0..a.rows as i64).collect();
        write_raw(&dir.join("ivf_base.f32"), &data, f32::to_le_bytes);
        write_raw(&dir.join("ivf_query.f32"), &queries, f32::to_le_bytes);
        let exact = search_flat(&queries, &data, &ids, dim, k, Metric::L2, None);
        write_raw(&dir.join("ivf_gt.i64"), &exact.ids, i64::to_le_bytes);
        (data, queries, ids, exact)
    });

    if let (false, Some((data, queries, ids, exact))) = (a.skip_ivf, &clustered_set) {
        let mut index = None;
        let build = Stat::of(
            (0..a.build_reps.max(1))
                .map(|_| {
                    let t = Instant::now();
                    index = Some(IvfFlat::build(data, ids, dim, a.nlist, Metric::L2, a.seed));
                    t.elapsed().as_secs_f64()
                })
                .collect(),
        );
        let Some(index) = index else { return };
        let batch = time_runs(a.reps, || index.search(queries, k, a.nprobe, None));
        let one_by_one = time_runs(a.reps.div_ceil(2), || {
            for q in queries.chunks_exact(dim) {
                std::hint::black_box(index.search(q, k, a.nprobe, None));
            }
        });
        let got = index.search(queries, k, a.nprobe, None);
        let r = recall(&got.ids, &exact.ids, k);
        eprintln!(
            "ours IVF: build {:.2} s, batch {:.4} s, one-by-one {:.4} s, recall {r:.4}",
            build.median, batch.median, one_by_one.median
        );
        let qps = |s: Stat| Stat {
            median: a.ivf_nq as f64 / s.median,
            best: a.ivf_nq as f64 / s.best,
        };
        rows.push(Row::time(
            format!("IVF_FLAT build (train+add), nlist {}", a.nlist),
            "ivf_build",
            build,
            "≤ 2× faiss",
            0.5,
        ));
        let mut b = Row::time(
            format!("IVF_FLAT QPS, nprobe {}, batch of {}", a.nprobe, a.ivf_nq),
            "ivf_batch",
            qps(batch),
            "≥ faiss",
            1.0,
        );
        b.unit = "q/s";
        rows.push(b);
        let mut o = Row::time(
            format!("IVF_FLAT QPS, nprobe {}, one query at a time", a.nprobe),
            "ivf_single_total",
            qps(one_by_one),
            "≥ faiss",
            1.0,
        );
        o.unit = "q/s";
        rows.push(o);
        let rs = Stat { median: r, best: r };
        let mut rr = Row::time(
            format!("IVF_FLAT recall@{k}, nprobe {}", a.nprobe),
            "ivf_recall",
            rs,
            "≥ 0.95",
            0.0,
        );
        rr.unit = "";
        rows.push(rr);
    }

    let hnsw_ours = match (a.skip_hnsw, &clustered_set) {
        (false, Some((data, queries, ids, exact))) => {
            Some(bench_hnsw(&a, data, queries, ids, exact))
        }
        _ => None,
    };

    let f = if a.no_faiss || (a.skip_flat && a.skip_ivf) {
        HashMap::new()
    } else {
        run_faiss(&a, &dir)
    };
    let get = |key: &str| f.get(key).and_then(|v| v.parse::<f64>().ok());
    for row in &mut rows {
        let (m, b) = (get(row.key), get(&format!("{}_best", row.key)));
        row.faiss = match (row.unit, m) {
            ("q/s", Some(m)) => Some(Stat {
                median: a.ivf_nq as f64 / m,
                best: a.ivf_nq as f64 / b.unwrap_or(m),
            }),
            (_, Some(m)) => Some(Stat {
                median: m,
                best: b.unwrap_or(m),
            }),
            _ => None,
        };
    }

    println!();
    if let Some(v) = f.get("faiss_version") {
        println!(
            "faiss-cpu {v}, {} OpenMP threads",
            f.get("faiss_threads").map(String::as_str).unwrap_or("?")
        );
    }
    if let (Some(ours), Ok(bytes)) = (&ours_flat_ids, fs::read(dir.join("flat_faiss_ids.i64"))) {
        let theirs: Vec<i64> = bytes
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
            .collect();
        println!(
            "FLAT exact top-{k}: {:.4} of faiss's ids found by ours",
            recall(&ours.ids, &theirs, k)
        );
    }
    println!("\nmedians:\n{}", table(&rows, |s| s.median));
    println!("best runs:\n{}", table(&rows, |s| s.best));
    if let Some(ours) = &hnsw_ours {
        let theirs = if a.no_faiss {
            HashMap::new()
        } else {
            run_hnswlib(&a, &dir)
        };
        println!("{}", hnsw_table(&a, ours, &theirs));
        print_hnsw_curves(&a, ours, &theirs);
    }
    println!("loadavg at end: {}", loadavg());
    let _ = std::io::stdout().flush();
}

/// A markdown table of `rows`, reading each Stat through `pick`.
fn table(rows: &[Row], pick: impl Fn(&Stat) -> f64) -> String {
    let mut out = String::from(
        "| measurement | mishards | faiss-cpu | mishards advantage | target | met |\n|---|---:|---:|---:|---|---|\n",
    );
    for row in rows {
        let fmt = |v: f64| match row.unit {
            "s" if v < 0.01 => format!("{:.2} ms", v * 1e3),
            "s" if v < 1.0 => format!("{:.1} ms", v * 1e3),
            "s" => format!("{v:.2} s"),
            "q/s" => format!("{v:.0} q/s"),
            _ => format!("{v:.4}"),
        };
        let ours = pick(&row.ours);
        let (adv, met) = match &row.faiss {
            Some(f) => {
                let fv = pick(f);
                if row.unit.is_empty() {
                    (format!("{:+.4}", ours - fv), ours >= 0.95)
                } else {
                    let adv = if row.unit == "s" {
                        fv / ours
                    } else {
                        ours / fv
                    };
                    (format!("{adv:.2}×"), adv >= row.need)
                }
            }
            None => ("—".to_string(), row.unit.is_empty() && ours >= 0.95),
        };
        let faiss = row
            .faiss
            .as_ref()
            .map(|f| fmt(pick(f)))
            .unwrap_or_else(|| "—".into());
        let met = if met { "yes" } else { "**no**" };
        out.push_str(&format!(
            "| {} | {} | {faiss} | {adv} | {} | {met} |\n",
            row.what,
            fmt(ours),
            row.target
        ));
    }
    out
}

/// Our HNSW figures: build seconds, then per search ef the batch time and recall.
struct HnswOurs {
    build: f64,
    max_level: usize,
    points: Vec<(usize, Stat, f64)>,
}

fn bench_hnsw(a: &Args, data: &[f32], queries: &[f32], ids: &[i64], exact: &TopK) -> HnswOurs {
    let (dim, k) = (a.dim, a.k);
    let params = HnswParams {
        m: a.hnsw_m,
        ef_construction: a.hnsw_efc,
        seed: a.seed,
    };
    let t = Instant::now();
    let index = Hnsw::build(data, ids, dim, Metric::L2, params).unwrap_or_else(|e| {
        eprintln!("HNSW build: {e}");
        std::process::exit(2)
    });
    let build = t.elapsed().as_secs_f64();
    eprintln!(
        "ours HNSW: build {build:.2} s, max level {}",
        index.max_level()
    );
    let mut points = Vec::new();
    for &ef in &a.hnsw_efs {
        let ef = ef.max(k);
        let search = || {
            index.search(queries, k, ef, None).unwrap_or_else(|e| {
                eprintln!("HNSW search: {e}");
                std::process::exit(2)
            })
        };
        let batch = time_runs(a.reps, search);
        let r = recall(&search().ids, &exact.ids, k);
        eprintln!(
            "ours HNSW ef {ef}: batch {:.4} s, recall {r:.4}",
            batch.median
        );
        points.push((ef, batch, r));
    }
    HnswOurs {
        build,
        max_level: index.max_level(),
        points,
    }
}

fn run_hnswlib(a: &Args, dir: &Path) -> HashMap<String, String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let python = std::env::var("MISHARDS_BENCH_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|_| root.join(".venv/bin/python"));
    let efs: Vec<String> = a.hnsw_efs.iter().map(|e| e.max(&a.k).to_string()).collect();
    let mut cmd = Command::new(&python);
    cmd.arg(root.join("benches/hnswlib_baseline.py"))
        .args(["--dir", &dir.display().to_string()])
        .args(["--dim", &a.dim.to_string(), "--k", &a.k.to_string()])
        .args(["--m", &a.hnsw_m.to_string()])
        .args(["--ef-construction", &a.hnsw_efc.to_string()])
        .args(["--ef", &efs.join(","), "--reps", &a.reps.to_string()]);
    eprintln!("running hnswlib baseline with {}", python.display());
    let out = match cmd.output() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("could not run {}: {e}", python.display());
            return HashMap::new();
        }
    };
    if !out.status.success() {
        eprintln!(
            "hnswlib baseline failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        return HashMap::new();
    }
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            l.split_once(' ')
                .map(|(k, v)| (k.to_string(), v.trim().to_string()))
        })
        .collect()
}

/// hnswlib's QPS at `recall`, interpolated log-linearly between its two ef points around it
/// (`None` outside its measured recall range).
fn qps_at_recall(curve: &[(f64, f64)], recall: f64) -> Option<f64> {
    let mut c = curve.to_vec();
    c.sort_by(|x, y| x.0.total_cmp(&y.0));
    for w in c.windows(2) {
        let ((r0, q0), (r1, q1)) = (w[0], w[1]);
        if (r0..=r1).contains(&recall) {
            if r1 == r0 {
                return Some(q0.max(q1));
            }
            let t = (recall - r0) / (r1 - r0);
            return Some((q0.ln() + t * (q1.ln() - q0.ln())).exp());
        }
    }
    c.iter().find(|p| p.0 == recall).map(|p| p.1)
}

/// The HNSW sweep as `curve,<ours|anchor>,<ef>,<recall>,<qps>` lines, for benches/plot_curves.py.
fn print_hnsw_curves(a: &Args, ours: &HnswOurs, theirs: &HashMap<String, String>) {
    let get = |key: &str| theirs.get(key).and_then(|v| v.parse::<f64>().ok());
    let nq = a.ivf_nq as f64;
    for &(ef, batch, r) in &ours.points {
        println!("curve,ours,{ef},{r:.4},{:.0}", nq / batch.median);
        if let (Some(t), Some(tr)) = (
            get(&format!("hnsw_batch_ef{ef}")),
            get(&format!("hnsw_recall_ef{ef}")),
        ) {
            println!("curve,anchor,{ef},{tr:.4},{:.0}", nq / t);
        }
    }
}

fn hnsw_table(a: &Args, ours: &HnswOurs, theirs: &HashMap<String, String>) -> String {
    let get = |key: &str| theirs.get(key).and_then(|v| v.parse::<f64>().ok());
    let nq = a.ivf_nq as f64;
    let mut out = format!(
        "HNSW, M {}, efConstruction {}, L2, {} queries per batch (all cores); hnswlib {} ({} threads); our max level {}\n\n",
        a.hnsw_m,
        a.hnsw_efc,
        a.ivf_nq,
        theirs
            .get("hnswlib_version")
            .map(String::as_str)
            .unwrap_or("not run"),
        theirs
            .get("hnswlib_threads")
            .map(String::as_str)
            .unwrap_or("?"),
        ours.max_level
    );
    let build_theirs = get("hnsw_build");
    out.push_str(&format!(
        "| build | mishards {:.2} s | hnswlib {} | ratio {} | target ≤ 1.5× | met {} |\n\n",
        ours.build,
        build_theirs.map_or("—".into(), |t| format!("{t:.2} s")),
        build_theirs.map_or("—".into(), |t| format!("{:.2}×", ours.build / t)),
        build_theirs.map_or("—", |t| if ours.build <= 1.5 * t {
            "yes"
        } else {
            "**no**"
        }),
    ));
    let curve: Vec<(f64, f64)> = ours
        .points
        .iter()
        .filter_map(|&(ef, _, _)| {
            Some((
                get(&format!("hnsw_recall_ef{ef}"))?,
                nq / get(&format!("hnsw_batch_ef{ef}"))?,
            ))
        })
        .collect();
    out.push_str(
        "| ef | mishards QPS | mishards recall | hnswlib QPS | hnswlib recall | QPS ratio, same ef | hnswlib QPS at our recall | QPS ratio, equal recall (target ≥ 1) |\n|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for &(ef, batch, r) in &ours.points {
        let qps = nq / batch.median;
        let (tq, tr) = (
            get(&format!("hnsw_batch_ef{ef}")).map(|t| nq / t),
            get(&format!("hnsw_recall_ef{ef}")),
        );
        let at = qps_at_recall(&curve, r);
        let f = |v: Option<f64>, p: usize| v.map_or("—".into(), |v| format!("{v:.p$}"));
        out.push_str(&format!(
            "| {ef} | {qps:.0} | {r:.4} | {} | {} | {} | {} | {} |\n",
            f(tq, 0),
            f(tr, 4),
            tq.map_or("—".into(), |t| format!("{:.2}×", qps / t)),
            f(at, 0),
            at.map_or("—".into(), |t| format!("{:.2}×", qps / t)),
        ));
    }
    out
}

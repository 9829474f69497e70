//! ANNOY against Spotify's Annoy (the `annoy` PyPI package, metric 'euclidean') on the same data,
//! alternating the two sides run by run.
//!
//! ```sh
//! python3 -m venv /work/venv-h && /work/venv-h/bin/pip install annoy numpy
//! MISHARDS_BENCH_PYTHON=/work/venv-h/bin/python cargo bench --bench index_annoy -- [options]
//! ```
//!
//! Data as benches/index.rs makes its IVF/HNSW data: clustered Gaussian (`--centers`, `--noise`,
//! seed `--seed ^ 0x1F1F`), L2, exact top-k from FLAT. For each tree count both sides build a
//! forest (ours: rayon over trees; Annoy: `build(n_trees, n_jobs=-1)`), then for each search_k:
//! our one-query-at-a-time loop on one thread, Annoy's `get_nns_by_vector` loop (single-threaded:
//! its Python API takes one vector per call), and our batched search on all cores, repeated
//! `--reps` times in that order so machine noise hits both sides alike.
//!
//! Prints CSV lines `curve,<ours|ours_batch|anchor>,<n_trees>:<search_k>,<recall>,<qps>`,
//! `build,<ours|anchor>,<n_trees>,<seconds>`, and per tree count the QPS ratio of our nq=1 loop
//! to Annoy's at equal recall (Annoy's QPS interpolated log-linearly on its search_k curve at
//! our recall). Options [defaults]: `--rows N` [200000] `--dim D` [128] `--nq N` [1000] `--k K`
//! [10] `--centers N` [1000] `--noise S` [1.0] `--seed N` [42] `--trees LIST` [8,16,32,64]
//! `--search-k LIST` [100,250,500,1000,2500,5000,10000,20000] `--reps N` [3] `--no-anchor`.

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::Instant;

use mishards::node::index::{Annoy, AnnoyParams, AnnoySearch, Metric, search_flat};
use mishards::rng::SplitMix64;

struct Args {
    rows: usize,
    dim: usize,
    nq: usize,
    k: usize,
    centers: usize,
    noise: f32,
    seed: u64,
    trees: Vec<usize>,
    search_ks: Vec<i64>,
    reps: usize,
    no_anchor: bool,
}

fn list<T: std::str::FromStr>(name: &str, v: &str) -> Vec<T> {
    v.split(',').map(|e| num(name, e)).collect()
}

fn num<T: std::str::FromStr>(name: &str, v: &str) -> T {
    v.parse().unwrap_or_else(|_| {
        eprintln!("{name}: not a number: {v}");
        std::process::exit(2)
    })
}

fn parse_args() -> Args {
    let mut a = Args {
        rows: 200_000,
        dim: 128,
        nq: 1000,
        k: 10,
        centers: 1000,
        noise: 1.0,
        seed: 42,
        trees: vec![8, 16, 32, 64],
        search_ks: vec![100, 250, 500, 1000, 2500, 5000, 10000, 20000],
        reps: 3,
        no_anchor: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next().unwrap_or_else(|| {
                eprintln!("{flag} needs a value");
                std::process::exit(2)
            })
        };
        match flag.as_str() {
            "--rows" => a.rows = num("--rows", &value()),
            "--dim" => a.dim = num("--dim", &value()),
            "--nq" => a.nq = num("--nq", &value()),
            "--k" => a.k = num("--k", &value()),
            "--centers" => a.centers = num("--centers", &value()),
            "--noise" => a.noise = num("--noise", &value()),
            "--seed" => a.seed = num("--seed", &value()),
            "--trees" => a.trees = list("--trees", &value()),
            "--search-k" => a.search_ks = list("--search-k", &value()),
            "--reps" => a.reps = num("--reps", &value()),
            "--no-anchor" => a.no_anchor = true,
            // `cargo bench` passes --bench to every bench binary.
            "--bench" => {}
            other => {
                eprintln!("unknown option {other} (see the doc comment in benches/index_annoy.rs)");
                std::process::exit(2)
            }
        }
    }
    a
}

/// The normal draw of benches/index.rs (cosine half of Box–Muller), so the data is the same.
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
    let mut bytes = Vec::with_capacity(xs.len() * N);
    for &x in xs {
        bytes.extend_from_slice(&le(x));
    }
    fs::write(path, bytes).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

fn recall(got: &[i64], exact: &[i64], k: usize) -> f64 {
    let mut hit = 0usize;
    for (g, e) in got.chunks(k).zip(exact.chunks(k)) {
        hit += g.iter().filter(|id| **id != -1 && e.contains(id)).count();
    }
    hit as f64 / exact.len().max(1) as f64
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The Python side, answering one command per line.
struct Anchor {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Anchor {
    fn start(a: &Args, dir: &Path) -> Anchor {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let python = std::env::var("MISHARDS_BENCH_PYTHON")
            .map(PathBuf::from)
            .unwrap_or_else(|_| PathBuf::from("/work/venv-h/bin/python"));
        let mut child = Command::new(&python)
            .arg(root.join("benches/annoy_baseline.py"))
            .args(["--dir", &dir.display().to_string()])
            .args(["--dim", &a.dim.to_string(), "--k", &a.k.to_string()])
            .args(["--seed", &a.seed.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", python.display()));
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
        let mut anchor = Anchor {
            child,
            stdin,
            stdout,
        };
        let ready = anchor.line();
        println!("# anchor: {ready}");
        anchor
    }

    fn line(&mut self) -> String {
        let mut s = String::new();
        self.stdout.read_line(&mut s).expect("read the anchor");
        if s.is_empty() {
            panic!("the anchor script exited");
        }
        s.trim().to_string()
    }

    fn ask(&mut self, cmd: &str) -> Vec<f64> {
        writeln!(self.stdin, "{cmd}").expect("write to the anchor");
        self.stdin.flush().expect("flush");
        let reply = self.line();
        reply
            .split_whitespace()
            .skip(1)
            .map(|v| num("anchor reply", v))
            .collect()
    }
}

impl Drop for Anchor {
    fn drop(&mut self) {
        let _ = writeln!(self.stdin, "quit");
        let _ = self.child.wait();
    }
}

/// Annoy's QPS at `recall`, interpolated log-linearly on its (recall, qps) curve; `None` when
/// `recall` is outside the curve.
fn qps_at(curve: &[(f64, f64)], recall: f64) -> Option<f64> {
    let mut pts = curve.to_vec();
    pts.sort_by(|a, b| a.0.total_cmp(&b.0));
    pts.windows(2).find_map(|w| {
        let ((r0, q0), (r1, q1)) = (w[0], w[1]);
        if recall < r0 || recall > r1 {
            return None;
        }
        if r1 == r0 {
            return Some(q0.max(q1));
        }
        let t = (recall - r0) / (r1 - r0);
        Some((q0.ln() + t * (q1.ln() - q0.ln())).exp())
    })
}

fn main() {
    let a = parse_args();
    let (dim, k, nq) = (a.dim, a.k, a.nq);
    let mut rng = Rng(SplitMix64::new(a.seed ^ 0x1F1F));
    let centers = rng.normals(a.centers * dim);
    let data = clustered(&mut rng, &centers, a.rows, dim, a.noise);
    let queries = clustered(&mut rng, &centers, nq, dim, a.noise);
    let ids: Vec<i64> = (0..a.rows as i64).collect();
    let exact = search_flat(&queries, &data, &ids, dim, k, Metric::L2, None);
    let dir = std::env::temp_dir().join(format!("mishards-annoy-bench-{}", std::process::id()));
    fs::create_dir_all(&dir).expect("temp dir");
    write_raw(&dir.join("ivf_base.f32"), &data, f32::to_le_bytes);
    write_raw(&dir.join("ivf_query.f32"), &queries, f32::to_le_bytes);
    write_raw(&dir.join("ivf_gt.i64"), &exact.ids, i64::to_le_bytes);
    println!(
        "# {} rows x {dim}, {nq} queries, k {k}, {} centers, noise {}, seed {}, {} threads",
        a.rows,
        a.centers,
        a.noise,
        a.seed,
        rayon::current_num_threads()
    );
    let mut anchor = (!a.no_anchor).then(|| Anchor::start(&a, &dir));

    for &n_trees in &a.trees {
        let params = AnnoyParams {
            n_trees,
            seed: a.seed,
        };
        let t = Instant::now();
        let index = Annoy::build(&data, &ids, dim, Metric::L2, &params).expect("valid params");
        println!("build,ours,{n_trees},{:.3}", t.elapsed().as_secs_f64());
        if let Some(an) = anchor.as_mut() {
            let b = an.ask(&format!("build {n_trees}"));
            println!("build,anchor,{n_trees},{:.3}", b[0]);
            println!("# anchor build() alone {:.3} s", b[1]);
        }
        let (mut ours, mut theirs) = (Vec::new(), Vec::new());
        for &sk in &a.search_ks {
            let search = AnnoySearch { search_k: sk };
            let (mut t_one, mut t_batch, mut t_anchor) = (Vec::new(), Vec::new(), Vec::new());
            let (mut r_one, mut r_anchor) = (0.0, 0.0);
            let mut ids_one = vec![0i64; nq * k];
            for _ in 0..a.reps.max(1) {
                let t = Instant::now();
                for (q, out) in queries.chunks_exact(dim).zip(ids_one.chunks_mut(k)) {
                    let got = index.search(q, k, &search, None).expect("valid");
                    out.copy_from_slice(&got.ids);
                }
                t_one.push(t.elapsed().as_secs_f64());
                r_one = recall(&ids_one, &exact.ids, k);
                if let Some(an) = anchor.as_mut() {
                    let r = an.ask(&format!("query {sk}"));
                    t_anchor.push(r[0]);
                    r_anchor = r[1];
                }
                let t = Instant::now();
                let got = index.search(&queries, k, &search, None).expect("valid");
                t_batch.push(t.elapsed().as_secs_f64());
                assert_eq!(got.ids, ids_one, "batched and one-by-one results differ");
            }
            let qps = |t: Vec<f64>| nq as f64 / median(t);
            let (q_one, q_batch) = (qps(t_one), qps(t_batch));
            println!("curve,ours,{n_trees}:{sk},{r_one:.4},{q_one:.1}");
            println!("curve,ours_batch,{n_trees}:{sk},{r_one:.4},{q_batch:.1}");
            ours.push((r_one, q_one));
            if !t_anchor.is_empty() {
                let q_anchor = qps(t_anchor);
                println!("curve,anchor,{n_trees}:{sk},{r_anchor:.4},{q_anchor:.1}");
                theirs.push((r_anchor, q_anchor));
            }
        }
        for &(r, q) in &ours {
            match qps_at(&theirs, r) {
                Some(qa) => println!(
                    "ratio,{n_trees},recall {r:.4},ours {q:.0} qps,anchor {qa:.0} qps,x{:.2}",
                    q / qa
                ),
                None => println!("ratio,{n_trees},recall {r:.4},outside the anchor's curve"),
            }
        }
    }
    drop(anchor);
    let _ = fs::remove_dir_all(&dir);
}

//! IVF_PQ against faiss-cpu's `IndexIVFPQ`, on the same data, alternating run by run.
//!
//! ```sh
//! python3 -m venv .venv && .venv/bin/pip install numpy faiss-cpu   # once
//! MISHARDS_BENCH_PYTHON=.venv/bin/python cargo bench --bench index_ivf_pq -- [options]
//! ```
//!
//! Generates the clustered data of `benches/index.rs` (same generator, same seed: 200,000 × 128
//! around 1,000 centres, noise 1.0, 1,000 queries from the same clusters), writes it as raw
//! little-endian files, starts `benches/ivf_pq_baseline.py` (with `$MISHARDS_BENCH_PYTHON`,
//! default `.venv/bin/python`) and drives it over stdin, so that for every `m` the two builds,
//! then for every `nprobe` the two searches, run back to back. Prints
//! `build,<ours|anchor>,m<M>,<seconds>` and `curve,<ours|anchor>,m<M>:nprobe=<P>,<recall>,<qps>`
//! lines (median of `--reps` batches of all queries; `qps_best` in a trailing column), then a
//! table with our QPS against faiss's at our recall (interpolated log-linearly on its curve).
//!
//! Options [defaults]: `--rows N` [200000] `--dim D` [128] `--nq N` [1000] `--k K` [10]
//! `--nlist N` [1024] `--m LIST` [16,32] `--nbits N` [8] `--nprobe LIST` [1,2,4,8,16,32,64]
//! `--centers N` [1000] `--noise S` [1.0] `--seed N` [42] `--build-seed N` the k-means seed
//! of both sides [ours: the data seed, faiss: its default 1234] `--reps N` [3] `--single N` nprobe
//! of a one-query-at-a-time run over all queries [16; 0 = none] `--no-anchor` `--keep DIR`.

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::Instant;

use mishards::node::index::{IvfPq, IvfPqParams, IvfPqSearch, Metric, search_flat};
use mishards::rng::SplitMix64;

struct Args {
    rows: usize,
    dim: usize,
    nq: usize,
    k: usize,
    nlist: usize,
    ms: Vec<usize>,
    nbits: usize,
    nprobes: Vec<usize>,
    centers: usize,
    noise: f32,
    seed: u64,
    build_seed: Option<u64>,
    reps: usize,
    single: usize,
    no_anchor: bool,
    keep: Option<PathBuf>,
}

fn parse_args() -> Args {
    let mut a = Args {
        rows: 200_000,
        dim: 128,
        nq: 1000,
        k: 10,
        nlist: 1024,
        ms: vec![16, 32],
        nbits: 8,
        nprobes: vec![1, 2, 4, 8, 16, 32, 64],
        centers: 1000,
        noise: 1.0,
        seed: 42,
        build_seed: None,
        reps: 3,
        single: 16,
        no_anchor: false,
        keep: None,
    };
    fn num<T: std::str::FromStr>(name: &str, v: &str) -> T {
        v.parse().unwrap_or_else(|_| {
            eprintln!("{name}: not a number: {v}");
            std::process::exit(2)
        })
    }
    fn list(name: &str, v: &str) -> Vec<usize> {
        v.split(',').map(|e| num(name, e)).collect()
    }
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
            "--nlist" => a.nlist = num("--nlist", &value()),
            "--m" => a.ms = list("--m", &value()),
            "--nbits" => a.nbits = num("--nbits", &value()),
            "--nprobe" => a.nprobes = list("--nprobe", &value()),
            "--centers" => a.centers = num("--centers", &value()),
            "--noise" => a.noise = num("--noise", &value()),
            "--seed" => a.seed = num("--seed", &value()),
            "--build-seed" => a.build_seed = Some(num("--build-seed", &value())),
            "--reps" => a.reps = num("--reps", &value()),
            "--single" => a.single = num("--single", &value()),
            "--no-anchor" => a.no_anchor = true,
            "--keep" => a.keep = Some(PathBuf::from(value())),
            // `cargo bench` passes --bench to every bench binary.
            "--bench" => {}
            other => {
                eprintln!(
                    "unknown option {other} (see the doc comment in benches/index_ivf_pq.rs)"
                );
                std::process::exit(2)
            }
        }
    }
    a
}

/// The generator of benches/index.rs (cosine half of Box–Muller), so the data is the same.
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
    let bytes: Vec<u8> = xs.iter().flat_map(|&x| le(x)).collect();
    fs::write(path, bytes).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

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

/// The faiss process, answering one line per command.
struct Anchor {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Anchor {
    fn start(a: &Args, dir: &Path) -> Option<Anchor> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let python = std::env::var("MISHARDS_BENCH_PYTHON")
            .map(PathBuf::from)
            .unwrap_or_else(|_| root.join(".venv/bin/python"));
        let mut cmd = Command::new(&python);
        cmd.arg(root.join("benches/ivf_pq_baseline.py"))
            .args(["--dir", &dir.display().to_string()])
            .args(["--dim", &a.dim.to_string(), "--k", &a.k.to_string()])
            .args(["--nlist", &a.nlist.to_string()]);
        if let Some(seed) = a.build_seed {
            cmd.args(["--seed", &seed.to_string()]);
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| eprintln!("could not run {}: {e}", python.display()))
            .ok()?;
        let stdin = child.stdin.take()?;
        let stdout = BufReader::new(child.stdout.take()?);
        let mut anchor = Anchor {
            child,
            stdin,
            stdout,
        };
        let hello = anchor.read()?;
        println!(
            "anchor: faiss-cpu {} ({} OpenMP threads)",
            hello[1], hello[2]
        );
        Some(anchor)
    }

    fn read(&mut self) -> Option<Vec<String>> {
        let mut line = String::new();
        self.stdout.read_line(&mut line).ok()?;
        if line.is_empty() {
            eprintln!("anchor exited");
            return None;
        }
        Some(line.split_whitespace().map(String::from).collect())
    }

    /// Times faiss's current index at `nprobe` and prints it as a `curve,<series>,…` line;
    /// returns its (recall, median QPS).
    fn search_point(
        &mut self,
        a: &Args,
        series: &str,
        m: usize,
        nprobe: usize,
    ) -> Option<(f64, f64)> {
        let answer = self.ask(&format!("search {nprobe} {}", a.reps))?;
        let f = |i: usize| answer.get(i)?.parse::<f64>().ok();
        let (r, med, best) = (f(2)?, f(3)?, f(4)?);
        let qps = a.nq as f64 / med;
        println!(
            "curve,{series},m{m}:nprobe={nprobe},{r:.4},{qps:.0},{:.0}",
            a.nq as f64 / best
        );
        Some((r, qps))
    }

    fn ask(&mut self, cmd: &str) -> Option<Vec<String>> {
        writeln!(self.stdin, "{cmd}").ok()?;
        self.stdin.flush().ok()?;
        self.read()
    }
}

impl Drop for Anchor {
    fn drop(&mut self) {
        let _ = writeln!(self.stdin, "quit");
        let _ = self.stdin.flush();
        let _ = self.child.wait();
    }
}

/// faiss's QPS at `recall`, interpolated log-linearly between the two curve points around it.
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
    None
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
    println!(
        "IVF_PQ bench: {} × {dim} around {} centres, noise {}, {} queries, k {k}, nlist {}, nbits {}; \
         {} rayon threads; loadavg {}",
        a.rows,
        a.centers,
        a.noise,
        a.nq,
        a.nlist,
        a.nbits,
        rayon::current_num_threads(),
        loadavg()
    );
    // The clustered set of benches/index.rs.
    let mut rng = Rng(SplitMix64::new(a.seed ^ 0x1F1F));
    let centers = rng.normals(a.centers * dim);
    let data = clustered(&mut rng, &centers, a.rows, dim, a.noise);
    let queries = clustered(&mut rng, &centers, a.nq, dim, a.noise);
    let ids: Vec<i64> = (0..a.rows as i64).collect();
    let exact = search_flat(&queries, &data, &ids, dim, k, Metric::L2, None);
    write_raw(&dir.join("ivf_base.f32"), &data, f32::to_le_bytes);
    write_raw(&dir.join("ivf_query.f32"), &queries, f32::to_le_bytes);
    write_raw(&dir.join("ivf_gt.i64"), &exact.ids, i64::to_le_bytes);
    let mut anchor = if a.no_anchor {
        None
    } else {
        Anchor::start(&a, &dir)
    };
    let mut summary = Vec::new();
    for &m in &a.ms {
        let params = IvfPqParams {
            nlist: a.nlist,
            m,
            nbits: a.nbits,
            seed: a.build_seed.unwrap_or(a.seed),
        };
        let t = Instant::now();
        let index = IvfPq::build(&data, &ids, dim, Metric::L2, &params).unwrap_or_else(|e| {
            eprintln!("build: {e}");
            std::process::exit(2)
        });
        let ours_build = t.elapsed().as_secs_f64();
        println!("build,ours,m{m},{ours_build:.3}");
        let anchor_build = anchor
            .as_mut()
            .and_then(|an| an.ask(&format!("build {m} {}", a.nbits)))
            .and_then(|r| r.get(1).and_then(|v| v.parse::<f64>().ok()));
        if let Some(s) = anchor_build {
            println!("build,anchor,m{m},{s:.3}");
        }
        let mut ours_curve = Vec::new();
        let mut anchor_curve = Vec::new();
        for &nprobe in &a.nprobes {
            let search = IvfPqSearch { nprobe };
            let run = || {
                index
                    .search(&queries, k, &search, None)
                    .unwrap_or_else(|e| {
                        eprintln!("search: {e}");
                        std::process::exit(2)
                    })
            };
            let got = run();
            let mut times: Vec<f64> = (0..a.reps.max(1))
                .map(|_| {
                    let t = Instant::now();
                    std::hint::black_box(run());
                    t.elapsed().as_secs_f64()
                })
                .collect();
            times.sort_by(f64::total_cmp);
            let (med, best) = (times[times.len() / 2], times[0]);
            let r = recall(&got.ids, &exact.ids, k);
            let qps = a.nq as f64 / med;
            println!(
                "curve,ours,m{m}:nprobe={nprobe},{r:.4},{qps:.0},{:.0}",
                a.nq as f64 / best
            );
            ours_curve.push((nprobe, r, qps));
            let point = anchor
                .as_mut()
                .and_then(|an| an.search_point(&a, "anchor", m, nprobe));
            if let Some((r, qps)) = point {
                anchor_curve.push((nprobe, r, qps));
            }
        }
        if a.single > 0 {
            // nq = 1: every query alone, on this thread.
            let search = IvfPqSearch { nprobe: a.single };
            let t = Instant::now();
            for q in queries.chunks_exact(dim) {
                std::hint::black_box(index.search(q, k, &search, None).ok());
            }
            let ours = a.nq as f64 / t.elapsed().as_secs_f64();
            println!("single,ours,m{m}:nprobe={},{ours:.0}", a.single);
            let answer = anchor
                .as_mut()
                .and_then(|an| an.ask(&format!("single {}", a.single)));
            if let Some(s) = answer.and_then(|v| v.get(2).and_then(|x| x.parse::<f64>().ok())) {
                let theirs = a.nq as f64 / s;
                println!(
                    "single,anchor,m{m}:nprobe={},{theirs:.0}  (ours/faiss {:.2}×)",
                    a.single,
                    ours / theirs
                );
            }
        }
        if let Some(an) = anchor.as_mut() {
            // faiss on our quantizers: "both" gives it our recall (speed alone compared);
            // "coarse" trains its own PQ on our lists (which half a recall gap comes from).
            let path = dir.join(format!("ours_m{m}.index"));
            let written = fs::File::create(&path)
                .and_then(|mut f| index.write_to(&mut f))
                .map_err(|e| eprintln!("write {}: {e}", path.display()));
            for what in ["both", "coarse"].into_iter().filter(|_| written.is_ok()) {
                if an
                    .ask(&format!("adopt {} {what}", path.display()))
                    .is_none()
                {
                    break;
                }
                let series = format!("anchor_our_{what}");
                for &nprobe in &a.nprobes {
                    an.search_point(&a, &series, m, nprobe);
                }
            }
        }
        summary.push((m, ours_build, anchor_build, ours_curve, anchor_curve));
    }
    drop(anchor);
    println!();
    for (m, ob, ab, ours, theirs) in &summary {
        println!(
            "m = {m}: build ours {ob:.2} s, faiss {}",
            ab.map(|s| format!("{s:.2} s ({:.2}× ours/faiss)", ob / s))
                .unwrap_or_else(|| "—".into())
        );
        println!(
            "| nprobe | recall ours | recall faiss | QPS ours | QPS faiss | ours / faiss, same nprobe | faiss QPS at our recall | ours (fastest point at ≥ this recall) / faiss, equal recall |\n|---:|---:|---:|---:|---:|---:|---:|---:|"
        );
        let curve: Vec<(f64, f64)> = theirs.iter().map(|&(_, r, q)| (r, q)).collect();
        let opt =
            |v: Option<f64>, f: &dyn Fn(f64) -> String| v.map(f).unwrap_or_else(|| "—".into());
        for &(nprobe, r, q) in ours {
            let same = theirs.iter().find(|t| t.0 == nprobe);
            // At equal recall: our fastest point reaching this recall against faiss's
            // interpolated QPS there (on a plateau, a larger nprobe adds time, not recall).
            let qb = ours
                .iter()
                .filter(|o| o.1 >= r)
                .map(|o| o.2)
                .fold(q, f64::max);
            let f = qps_at_recall(&curve, r);
            println!(
                "| {nprobe} | {r:.4} | {} | {q:.0} | {} | {} | {} | {} |",
                opt(same.map(|t| t.1), &|v| format!("{v:.4}")),
                opt(same.map(|t| t.2), &|v| format!("{v:.0}")),
                opt(same.map(|t| q / t.2), &|v| format!("{v:.2}×")),
                opt(f, &|v| format!("{v:.0}")),
                opt(f.map(|f| qb / f), &|v| format!("{v:.2}×")),
            );
        }
    }
    println!("loadavg at end: {}", loadavg());
}

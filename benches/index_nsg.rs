//! RNSG (NSG) against our own HNSW on the same clustered data: build time, then recall@k and QPS
//! over a sweep of NSG's `search_length` and HNSW's `ef`, the two sweeps run alternately so both
//! see the same machine load.
//!
//! ```sh
//! cargo bench --bench index_nsg -- [options]
//! ```
//!
//! Data as `benches/index.rs` generates its IVF/HNSW set: 200,000 × 128 floats around 1,000
//! centres ~ N(0, 1), point = centre + 1.0 · N(0, 1), seed 42; 1,000 queries from the same
//! centres; L2; exact answers from FLAT. Options (defaults in brackets): `--rows N` [200000]
//! `--dim D` [128] `--nq N` [1000] `--k K` [10] `--centers N` [1000] `--noise S` [1.0]
//! `--seed N` [42] `--reps N` timed batches per point [3] `--build-length N` [45]
//! `--out-degree N` [50] `--pool N` candidate_pool_size [300] `--knng N` [100]
//! `--search-length LIST` [10,15,20,30,45,60,90,150,300] `--hnsw-m M` [16] `--hnsw-efc N` [200]
//! `--ef LIST` [10,16,24,32,48,64,96,128,256] `--skip-hnsw`.
//!
//! Prints CSV lines `build,<ours|anchor>,<seconds>` and `curve,<ours|anchor>,<param>,<recall>,<qps>`
//! (ours = NSG, anchor = our HNSW), then per NSG point HNSW's QPS at the same recall
//! (interpolated log-linearly on HNSW's curve) and the ratio.

use std::time::Instant;

use mishards::node::index::{Hnsw, HnswParams, Metric, Nsg, NsgParams, NsgSearch, search_flat};
use mishards::rng::SplitMix64;

struct Args {
    rows: usize,
    dim: usize,
    nq: usize,
    k: usize,
    centers: usize,
    noise: f32,
    seed: u64,
    reps: usize,
    nsg: NsgParams,
    lengths: Vec<usize>,
    hnsw_m: usize,
    hnsw_efc: usize,
    efs: Vec<usize>,
    skip_hnsw: bool,
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
        reps: 3,
        nsg: NsgParams {
            search_length: 45,
            out_degree: 50,
            candidate_pool_size: 300,
            knng: 100,
            seed: 42,
        },
        lengths: vec![10, 15, 20, 30, 45, 60, 90, 150, 300],
        hnsw_m: 16,
        hnsw_efc: 200,
        efs: vec![10, 16, 24, 32, 48, 64, 96, 128, 256],
        skip_hnsw: false,
    };
    let mut it = std::env::args().skip(1);
    let fail = |msg: String| -> ! {
        eprintln!("{msg} (see the doc comment in benches/index_nsg.rs)");
        std::process::exit(2)
    };
    while let Some(flag) = it.next() {
        if flag == "--bench" {
            // `cargo bench` passes --bench to every bench binary.
            continue;
        }
        if flag == "--skip-hnsw" {
            a.skip_hnsw = true;
            continue;
        }
        let v = it
            .next()
            .unwrap_or_else(|| fail(format!("{flag} needs a value")));
        let num = |v: &str| -> usize {
            v.parse()
                .unwrap_or_else(|_| fail(format!("{flag}: not a number: {v}")))
        };
        let list = |v: &str| -> Vec<usize> { v.split(',').map(num).collect() };
        match flag.as_str() {
            "--rows" => a.rows = num(&v),
            "--dim" => a.dim = num(&v),
            "--nq" => a.nq = num(&v),
            "--k" => a.k = num(&v),
            "--centers" => a.centers = num(&v),
            "--noise" => {
                a.noise = v
                    .parse()
                    .unwrap_or_else(|_| fail(format!("--noise: not a number: {v}")))
            }
            "--seed" => a.seed = num(&v) as u64,
            "--reps" => a.reps = num(&v),
            "--build-length" => a.nsg.search_length = num(&v),
            "--out-degree" => a.nsg.out_degree = num(&v),
            "--pool" => a.nsg.candidate_pool_size = num(&v),
            "--knng" => a.nsg.knng = num(&v),
            "--search-length" => a.lengths = list(&v),
            "--hnsw-m" => a.hnsw_m = num(&v),
            "--hnsw-efc" => a.hnsw_efc = num(&v),
            "--ef" => a.efs = list(&v),
            other => fail(format!("unknown option {other}")),
        }
    }
    a.nsg.seed = a.seed;
    a
}

/// Seeded normals exactly as `benches/index.rs` draws them (SplitMix64, cosine half of
/// Box–Muller), so both benches run on the same data.
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

fn recall(got: &[i64], exact: &[i64], k: usize) -> f64 {
    let mut hit = 0usize;
    for (g, e) in got.chunks(k).zip(exact.chunks(k)) {
        hit += g.iter().filter(|id| **id != -1 && e.contains(id)).count();
    }
    hit as f64 / exact.len().max(1) as f64
}

/// The median QPS of `reps` batches (after one warm-up) and the answer's ids.
fn time_qps(nq: usize, reps: usize, mut f: impl FnMut() -> Vec<i64>) -> (f64, Vec<i64>) {
    let ids = f();
    let mut secs: Vec<f64> = (0..reps.max(1))
        .map(|_| {
            let t = Instant::now();
            std::hint::black_box(f());
            t.elapsed().as_secs_f64()
        })
        .collect();
    secs.sort_by(f64::total_cmp);
    (nq as f64 / secs[secs.len() / 2], ids)
}

/// QPS at `recall` on a (recall, qps) curve, interpolated log-linearly between the two points
/// around it (`None` outside the curve's recall range).
fn qps_at_recall(curve: &[(f64, f64)], recall: f64) -> Option<f64> {
    let mut c = curve.to_vec();
    c.sort_by(|x, y| x.0.total_cmp(&y.0).then(y.1.total_cmp(&x.1)));
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
    let mut rng = Rng(SplitMix64::new(a.seed ^ 0x1F1F));
    let centers = rng.normals(a.centers * dim);
    let data = clustered(&mut rng, &centers, a.rows, dim, a.noise);
    let queries = clustered(&mut rng, &centers, a.nq, dim, a.noise);
    let ids: Vec<i64> = (0..a.rows as i64).collect();
    let exact = search_flat(&queries, &data, &ids, dim, k, Metric::L2, None);
    eprintln!(
        "{} × {dim}, {} centres, noise {}, {} queries, k {k}, {} threads; NSG {:?}; HNSW M {} efConstruction {}",
        a.rows,
        a.centers,
        a.noise,
        a.nq,
        rayon::current_num_threads(),
        a.nsg,
        a.hnsw_m,
        a.hnsw_efc
    );

    let t = Instant::now();
    let nsg = Nsg::build(&data, &ids, dim, Metric::L2, &a.nsg).unwrap_or_else(|e| {
        eprintln!("NSG build: {e}");
        std::process::exit(2)
    });
    println!("build,ours,{:.2}", t.elapsed().as_secs_f64());
    eprintln!(
        "NSG: {:.1} links per row, {} MB",
        nsg.link_count() as f64 / a.rows as f64,
        nsg.memory_bytes() >> 20
    );
    let hnsw = (!a.skip_hnsw).then(|| {
        let params = HnswParams {
            m: a.hnsw_m,
            ef_construction: a.hnsw_efc,
            seed: a.seed,
        };
        let t = Instant::now();
        let index = Hnsw::build(&data, &ids, dim, Metric::L2, params).unwrap_or_else(|e| {
            eprintln!("HNSW build: {e}");
            std::process::exit(2)
        });
        println!("build,anchor,{:.2}", t.elapsed().as_secs_f64());
        index
    });

    let (mut ours, mut anchor) = (Vec::new(), Vec::new());
    for i in 0..a.lengths.len().max(a.efs.len()) {
        if let Some(&l) = a.lengths.get(i) {
            let search = NsgSearch { search_length: l };
            let (qps, got) = time_qps(a.nq, a.reps, || {
                match nsg.search(&queries, k, &search, None) {
                    Ok(t) => t.ids,
                    Err(e) => {
                        eprintln!("NSG search: {e}");
                        std::process::exit(2)
                    }
                }
            });
            let r = recall(&got, &exact.ids, k);
            println!("curve,ours,{l},{r:.4},{qps:.0}");
            ours.push((l, r, qps));
        }
        if let (Some(h), Some(&ef)) = (&hnsw, a.efs.get(i)) {
            let ef = ef.max(k);
            let (qps, got) = time_qps(a.nq, a.reps, || match h.search(&queries, k, ef, None) {
                Ok(t) => t.ids,
                Err(e) => {
                    eprintln!("HNSW search: {e}");
                    std::process::exit(2)
                }
            });
            let r = recall(&got, &exact.ids, k);
            println!("curve,anchor,{ef},{r:.4},{qps:.0}");
            anchor.push((r, qps));
        }
    }
    if anchor.is_empty() {
        return;
    }
    println!("\n| search_length | recall@{k} | NSG q/s | HNSW q/s at that recall | ratio |");
    println!("|---:|---:|---:|---:|---:|");
    for (l, r, qps) in ours {
        match qps_at_recall(&anchor, r) {
            Some(h) => println!("| {l} | {r:.4} | {qps:.0} | {h:.0} | {:.2}× |", qps / h),
            None => println!("| {l} | {r:.4} | {qps:.0} | outside HNSW's curve | — |"),
        }
    }
}

//! Where the cgroup hierarchies are and where this process sits in them, from
//! `/proc/self/mountinfo` and `/proc/self/cgroup` (pure parsers; the callers read the files).

use std::path::{Path, PathBuf};

/// One mounted cgroup hierarchy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// Where it is mounted.
    pub point: PathBuf,
    /// Which part of the hierarchy is mounted there (`/` unless in a container).
    pub root: String,
    /// True for cgroup2.
    pub v2: bool,
    /// v1 controllers bound to it (`cpu`, `cpuacct`, `memory`, ...).
    pub controllers: Vec<String>,
}

/// Parses `/proc/self/mountinfo` for cgroup mounts.
pub fn parse_mountinfo(text: &str) -> Vec<Mount> {
    let mut out = Vec::new();
    for line in text.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let l: Vec<&str> = left.split(' ').collect();
        let r: Vec<&str> = right.split(' ').collect();
        if l.len() < 5 || r.len() < 3 {
            continue;
        }
        let fstype = r[0];
        if fstype != "cgroup" && fstype != "cgroup2" {
            continue;
        }
        let controllers = if fstype == "cgroup" {
            r[2].split(',')
                .filter(|o| !matches!(*o, "rw" | "ro") && !o.starts_with("name="))
                .filter(|o| !o.contains('=') && *o != "clone_children" && *o != "noprefix")
                .map(str::to_string)
                .collect()
        } else {
            Vec::new()
        };
        out.push(Mount {
            point: PathBuf::from(unescape(l[4])),
            root: unescape(l[3]),
            v2: fstype == "cgroup2",
            controllers,
        });
    }
    out
}

fn unescape(s: &str) -> String {
    s.replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\134", "\\")
}

/// One line of `/proc/self/cgroup`: (controllers, path); controllers is empty only for cgroup2.
pub fn parse_proc_cgroup(text: &str) -> Vec<(Vec<String>, String)> {
    text.lines()
        .filter_map(|l| {
            let mut p = l.splitn(3, ':');
            let _id = p.next()?;
            let ctrls = p.next()?;
            let path = p.next()?;
            // Named v1 hierarchies (`name=systemd`) keep their name so that only the cgroup2
            // line has an empty list.
            let ctrls = ctrls
                .split(',')
                .filter(|c| !c.is_empty())
                .map(str::to_string)
                .collect();
            Some((ctrls, path.to_string()))
        })
        .collect()
}

/// The directory of cgroup `path` (a hierarchy path) under `m`.
pub fn dir_of(m: &Mount, path: &str) -> PathBuf {
    let rel = path
        .strip_prefix(m.root.trim_end_matches('/'))
        .unwrap_or(path)
        .trim_start_matches('/');
    if rel.is_empty() {
        m.point.clone()
    } else {
        m.point.join(rel)
    }
}

/// The v1 mount carrying `controller`.
pub fn v1_mount<'a>(mounts: &'a [Mount], controller: &str) -> Option<&'a Mount> {
    mounts
        .iter()
        .find(|m| !m.v2 && m.controllers.iter().any(|c| c == controller))
}

/// This process's path in the v1 hierarchy carrying `controller`.
pub fn v1_own_path(own: &[(Vec<String>, String)], controller: &str) -> Option<String> {
    own.iter()
        .find(|(c, _)| c.iter().any(|c| c == controller))
        .map(|(_, p)| p.clone())
}

/// This process's cgroup2 path.
pub fn v2_own_path(own: &[(Vec<String>, String)]) -> Option<String> {
    own.iter()
        .find(|(c, _)| c.is_empty())
        .map(|(_, p)| p.clone())
}

/// True when `p` is a cgroup2 filesystem root (it has `cgroup.controllers`).
pub fn is_v2_dir(p: &Path) -> bool {
    p.join("cgroup.controllers").exists()
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw";

    const SYSTEMD_V1: &str =
        "25 24 0:22 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid shared:9 - cgroup cgroup rw,cpu,cpuacct
26 24 0:23 / /sys/fs/cgroup/memory rw,nosuid shared:10 - cgroup cgroup rw,memory";

    const UNIFIED: &str =
        "28 22 0:25 / /sys/fs/cgroup rw,nosuid,nodev shared:4 - cgroup2 cgroup2 rw,nsdelegate";

    #[test]
    fn mountinfo_variants() {
        let m = parse_mountinfo(HYBRID);
        assert_eq!(m.len(), 5);
        assert_eq!(
            v1_mount(&m, "cpu").unwrap().point,
            Path::new("/sys/fs/cgroup/cpu")
        );
        assert_eq!(
            v1_mount(&m, "cpuacct").unwrap().point,
            Path::new("/sys/fs/cgroup/cpuacct")
        );
        assert!(
            m.iter()
                .any(|x| x.v2 && x.point == Path::new("/sys/fs/cgroup/unified"))
        );
        let s = parse_mountinfo(SYSTEMD_V1);
        assert_eq!(v1_mount(&s, "cpu"), v1_mount(&s, "cpuacct"));
        let u = parse_mountinfo(UNIFIED);
        assert!(u[0].v2 && u[0].controllers.is_empty());
    }

    #[test]
    fn own_paths_and_dirs() {
        let own = parse_proc_cgroup(
            "9:name=systemd:/\n4:memory:/process_api/abc\n2:cpuacct:/\n1:cpu:/\n0::/system.slice/corral.service\n",
        );
        assert_eq!(
            v1_own_path(&own, "memory").as_deref(),
            Some("/process_api/abc")
        );
        assert_eq!(v1_own_path(&own, "cpu").as_deref(), Some("/"));
        assert_eq!(
            v2_own_path(&own).as_deref(),
            Some("/system.slice/corral.service")
        );
        let m = &parse_mountinfo(HYBRID)[2];
        assert_eq!(
            dir_of(m, "/process_api/abc"),
            Path::new("/sys/fs/cgroup/memory/process_api/abc")
        );
        assert_eq!(dir_of(m, "/"), Path::new("/sys/fs/cgroup/memory"));
        let nested = Mount {
            point: "/sys/fs/cgroup".into(),
            root: "/kubepods/pod1".into(),
            v2: true,
            controllers: vec![],
        };
        assert_eq!(
            dir_of(&nested, "/kubepods/pod1/x"),
            Path::new("/sys/fs/cgroup/x")
        );
    }
}

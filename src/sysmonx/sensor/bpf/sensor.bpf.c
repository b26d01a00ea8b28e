// SPDX-License-Identifier: GPL-2.0
/*
 * SysmonX tier-A sensor: a CO-RE eBPF object built from tracepoints and cgroup hooks only.
 *
 * See shared/spec/linux-sensing.md §2.4(b) and §5 (tier A): no kprobes, fentry or LSM programs,
 * because they are missing or refused on many hosts. Everything here is tp_btf or cgroup
 * sock_addr, so tracefs does not need to be mounted.
 *
 *   tp_btf/sched_process_exec   -> EV_EXEC   (ProcessCreate 1)
 *   tp_btf/sched_process_fork   -> remembered in `forks`; sent as EV_FORK (no event of its own)
 *                                  only when the child does something reported (exit, connect,
 *                                  file ...) or is a ptrace target before it execs, or a child
 *                                  of it execs before it does, right before that record (with the held forks of its
 *                                  own parents, flush_forks): a child that never execs gets its
 *                                  parent's image and its own GUID, the child of a subshell
 *                                  that execs next (`( x=$(echo); exec rm )`) the subshell as
 *                                  its parent, and the common fork + exec costs no record at all
 *   tp_btf/sched_process_exit   -> EV_EXIT   (ProcessTerminate 5), thread-group deaths only
 *   tp_btf/sys_exit             -> successful open/openat/openat2/creat   -> EV_FILE_CREATE (11),
 *                                                                          EV_RAW_READ (9)
 *                                  successful unlink/unlinkat             -> EV_FILE_DELETE (23)
 *                                  successful connect / accept / accept4  -> EV_NET (3), TCP + UDP
 *                                  successful ptrace ATTACH/SEIZE         -> EV_PTRACE (10)
 *   cgroup/sendmsg4|6, recvmsg4|6 -> EV_NET for unconnected UDP (deduplicated per flow, as
 *                                    Sysmon for Linux does for UDP)
 *
 * The user-space decoder is sysmonx/sensor/backends/ebpf.py: every struct below has a
 * struct-module twin there; keep them in step (the ABI version is in `struct hdr`).
 *
 * Loss accounting: whenever the ring buffer has no room, drops[type] is incremented (a per-CPU
 * array, summed by user space). sent[type] counts what was committed, so user space can prove
 * received == sent.
 *
 * Paths are rebuilt in the kernel by a mount-aware dentry walk and written leaf first, as
 * NUL-terminated components; user space reverses them.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>

char LICENSE[] SEC("license") = "GPL";

#define ABI_VERSION 3

enum ev_type {
	EV_EXEC = 1,
	EV_EXIT = 2,
	EV_NET = 3,
	EV_FILE_CREATE = 4,
	EV_RAW_READ = 5,
	EV_FILE_DELETE = 6,
	EV_PTRACE = 7,
	EV_FORK = 8,
	EV_NTYPES = 9,
};

/* cfg.mask bits: which event classes are enabled */
#define M_EXEC (1u << 0)
#define M_EXIT (1u << 1)
#define M_NET (1u << 2)
#define M_FILE_CREATE (1u << 3)
#define M_RAW_READ (1u << 4)
#define M_FILE_DELETE (1u << 5)
#define M_PTRACE (1u << 6)

/* header flags */
#define F_ARGV_TRUNC (1u << 0)
#define F_PATH1_TRUNC (1u << 1)
#define F_PATH2_TRUNC (1u << 2)
#define F_IMAGE_FILENAME (1u << 3) /* exe_file walk failed: image is bprm->filename */
#define F_BASE_CWD (1u << 4)       /* FILE_DELETE: relative path, base is the cwd */
#define F_BASE_DFD (1u << 5)       /* FILE_DELETE: relative path, base is dfd */
#define F_ARGV_FAIL (1u << 6)      /* argv could not be read (argv_len is 0) */
#define F_IMAGE_PSEUDO (1u << 7)   /* image has no path (memfd): its name, shown as /NAME (deleted) */
#define F_IMAGE_DELETED (1u << 8)  /* image file unlinked: the kernel shows PATH (deleted) */

#define DATA_MAX 16384   /* variable payload budget (power of two) */
#define NAME_CHUNK 256   /* NAME_MAX + 1 */
#define ARGV_MAX 4096    /* argument bytes kept */
#define UPATH_MAX 4096   /* user path bytes kept (FILE_DELETE) */
#define PATH_DEPTH 48    /* components (and mount crossings) per path walk */

#define AT_FDCWD -100
#define AT_REMOVEDIR 0x200
#define EINPROGRESS 115
#define PTRACE_ATTACH 16
#define PTRACE_SEIZE 0x4206
#define AF_INET 2
#define AF_INET6 10
#define IPPROTO_TCP 6
#define IPPROTO_UDP 17
#define S_IFMT 00170000
#define S_IFSOCK 0140000
#define S_IFBLK 0060000
#define S_IFREG 0100000
#define FMODE_READ 0x1
#define FMODE_CREATED 0x100000 /* include/linux/fs.h, bit 20 since 4.19 */
#define PF_KTHREAD 0x00200000
#define TS_COMPAT 0x0002

#if defined(__TARGET_ARCH_x86)
#define NR_open 2
#define NR_creat 85
#define NR_openat 257
#define NR_openat2 437
#define NR_unlink 87
#define NR_unlinkat 263
#define NR_connect 42
#define NR_accept 43
#define NR_accept4 288
#define NR_ptrace 101
#define SYSCALL_NR(regs) BPF_CORE_READ((regs), orig_ax)
#elif defined(__TARGET_ARCH_arm64)
#define NR_open -1
#define NR_creat -1
#define NR_openat 56
#define NR_openat2 437
#define NR_unlink -1
#define NR_unlinkat 35
#define NR_connect 203
#define NR_accept 202
#define NR_accept4 242
#define NR_ptrace 117
#define SYSCALL_NR(regs) BPF_CORE_READ((regs), syscallno)
#else
#error "set -D__TARGET_ARCH_x86 or -D__TARGET_ARCH_arm64"
#endif

struct hdr {
	__u16 type;
	__u16 flags;
	__u32 pid; /* tgid */
	__u32 tid;
	__u32 abi;
	__u64 ts;  /* bpf_ktime_get_boot_ns */
};

struct exec_ev {
	struct hdr h;
	__u32 ppid;
	__u32 uid;
	__u32 auid;
	__u32 sessionid;
	__u64 start_ns; /* group_leader->start_boottime */
	__u64 end_code; /* mm->end_code: Sysmon for Linux's process key (ProcessGuid bytes 8-15) */
	__u16 argv_len;
	__u16 image_len;
	__u16 cwd_len;
	__u16 pad;
	__u32 mnt_ns;   /* inode of the mount namespace at exec (/proc/PID/ns/mnt); 0 = unread */
	__u32 pid_ns;   /* inode of the active pid namespace at exec (/proc/PID/ns/pid); 0 = unread */
	char data[DATA_MAX + NAME_CHUNK];
};

struct exit_ev {
	struct hdr h;
	__u64 start_ns;
	__u32 exit_code; /* raw task->exit_code (status) */
	__u32 pad;
};

struct net_ev {
	struct hdr h;
	__u8 proto;     /* IPPROTO_TCP / IPPROTO_UDP */
	__u8 family;    /* AF_INET / AF_INET6 */
	__u8 initiated; /* 1 outbound (connect, send), 0 inbound (accept, recv) */
	__u8 pad;
	__u16 lport;    /* host order, 0 = unknown */
	__u16 rport;    /* host order */
	__u8 laddr[16]; /* network order; v4 in the first 4 bytes; all zero = unknown */
	__u8 raddr[16];
};

struct path_ev {
	struct hdr h;
	__u16 path_len;  /* FILE_DELETE: bytes of the user path string (with its NUL) */
	__u16 base_len;  /* FILE_DELETE: bytes of base-directory components */
	__s32 dfd;       /* FILE_DELETE: directory fd argument */
	char data[DATA_MAX + NAME_CHUNK];
};

struct fork_ev {
	struct hdr h;   /* pid: the child's tgid */
	__u32 ppid;     /* the child's real parent's tgid */
	__u32 uid;
	__u64 start_ns; /* the child's start_boottime */
};

struct ptrace_ev {
	struct hdr h;
	__u32 target;
	__u32 pad;
	__u64 request;
};

struct cfg {
	__u32 mask;
	__u32 pad;
	__u64 udp_interval_ns; /* UDP flows are re-reported after this long */
};

struct udp_key {
	__u32 tgid;
	__u8 initiated;
	__u8 family;
	__u16 lport;
	__u16 rport;
	__u16 pad;
	__u8 raddr[16];
};

struct counters {
	__u64 n[EV_NTYPES];
};

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 16 * 1024 * 1024); /* user space may resize before load */
} events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct counters);
} drops SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct counters);
} sent SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32);
	__type(value, __u8);
} excluded SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct cfg);
} sx_config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct udp_key);
	__type(value, __u64);
} udp_seen SEC(".maps");

struct fork_info {
	__u64 ts;       /* bpf_ktime_get_boot_ns at the fork */
	__u64 start_ns; /* the child's start_boottime */
	__u32 ppid;
	__u32 uid;
};

/* children that have not exec'd yet, by tgid (see flush_fork, flush_forks) */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, __u32);
	__type(value, struct fork_info);
} forks SEC(".maps");

/* Per-CPU scratch for the variable-size events (too big for the 512-byte BPF stack). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct exec_ev);
} scratch_exec SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct path_ev);
} scratch_path SEC(".maps");

/* ---------------------------------------------------------------------------------------- */

static __always_inline void count(void *map, __u32 type)
{
	__u32 zero = 0;
	struct counters *c = bpf_map_lookup_elem(map, &zero);
	if (c && type < EV_NTYPES)
		__sync_fetch_and_add(&c->n[type], 1);
}

static __always_inline int enabled(__u32 bit)
{
	__u32 zero = 0;
	struct cfg *c = bpf_map_lookup_elem(&sx_config, &zero);
	return c && (c->mask & bit);
}

static __always_inline int is_excluded(__u32 tgid)
{
	return bpf_map_lookup_elem(&excluded, &tgid) != NULL;
}

static __always_inline void fill_hdr(struct hdr *h, __u16 type)
{
	__u64 pt = bpf_get_current_pid_tgid();
	h->type = type;
	h->flags = 0;
	h->pid = pt >> 32;
	h->tid = (__u32)pt;
	h->abi = ABI_VERSION;
	h->ts = bpf_ktime_get_boot_ns();
}

/* Copy a scratch-built event of `size` bytes to the ring buffer; count it either way. */
static __always_inline void output(void *ev, __u64 size, __u32 type)
{
	if (bpf_ringbuf_output(&events, ev, size, 0) == 0)
		count(&sent, type);
	else
		count(&drops, type);
}

/* Reserve a fixed-size event; NULL (and a counted drop) when the ring buffer is full. */
static __always_inline void *reserve(__u64 size, __u32 type)
{
	void *p = bpf_ringbuf_reserve(&events, size, 0);
	if (!p)
		count(&drops, type);
	return p;
}

static __always_inline void submit(void *p, __u32 type)
{
	bpf_ringbuf_submit(p, 0);
	count(&sent, type);
}

/* A process that has not exec'd since its fork is about to be reported: send its fork first
 * (with the fork's own time) so user space knows its parent and start. */
static __always_inline void flush_fork(__u32 tgid)
{
	struct fork_info *fi = bpf_map_lookup_elem(&forks, &tgid);
	if (!fi)
		return;
	struct fork_ev *e = reserve(sizeof(struct fork_ev), EV_FORK);
	if (e) {
		e->h.type = EV_FORK;
		e->h.flags = 0;
		e->h.pid = tgid;
		e->h.tid = tgid;
		e->h.abi = ABI_VERSION;
		e->h.ts = fi->ts;
		e->ppid = fi->ppid;
		e->uid = fi->uid;
		e->start_ns = fi->start_ns;
		submit(e, EV_FORK);
	}
	bpf_map_delete_elem(&forks, &tgid);
}

/* Parents followed by flush_forks (a subshell of a subshell of ...: bounded for the verifier;
 * a deeper chain's topmost forks are not sent, and user space reads those parents from /proc) */
#define FORK_CHAIN_MAX 8

/* A record is about to name process `tgid` (as itself, or as the parent of an exec): send its
 * held fork and those of its parents still held, oldest first. A child's Parent* fields (and a
 * fork's inherited image) are its parent's as it was then; a parent that has not exec'd since
 * its fork is only known by its fork, which its own later exec would otherwise discard
 * (`( x=$(/bin/echo a); exec /bin/rm f )`: echo's parent, the subshell, had the zero GUID). */
static __always_inline void flush_forks(__u32 tgid)
{
	__u32 chain[FORK_CHAIN_MAX] = {};
	int n = 0;

	for (int i = 0; i < FORK_CHAIN_MAX; i++) {
		struct fork_info *fi = bpf_map_lookup_elem(&forks, &tgid);
		if (!fi)
			break;
		chain[i] = tgid;
		n = i + 1;
		tgid = fi->ppid;
	}
	for (int i = FORK_CHAIN_MAX - 1; i >= 0; i--)
		if (i < n)
			flush_fork(chain[i]);
}

#include "pathwalk.bpf.h"

static __always_inline __u64 start_boottime(struct task_struct *t)
{
	return BPF_CORE_READ(t, group_leader, start_boottime);
}

/* ------------------------------------------------------------------ process exec / exit -- */

SEC("tp_btf/sched_process_exec")
int BPF_PROG(on_exec, struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)
{
	__u32 zero = 0;
	int trunc = 0;
	struct task_struct *t = (struct task_struct *)bpf_get_current_task();
	__u64 pt = bpf_get_current_pid_tgid();

	__u32 me = pt >> 32;
	bpf_map_delete_elem(&forks, &me); /* the exec record says all a fork would */
	if (!enabled(M_EXEC) || is_excluded(pt >> 32))
		return 0;
	struct exec_ev *e = bpf_map_lookup_elem(&scratch_exec, &zero);
	struct walk *w = walk_state();
	if (!e || !w)
		return 0;
	fill_hdr(&e->h, EV_EXEC);
	e->ppid = BPF_CORE_READ(t, real_parent, tgid);
	e->uid = BPF_CORE_READ(t, cred, uid.val);
	e->auid = (__u32)-1;
	e->sessionid = (__u32)-1;
	if (bpf_core_field_exists(t->loginuid)) {
		e->auid = BPF_CORE_READ(t, loginuid.val);
		e->sessionid = BPF_CORE_READ(t, sessionid);
	}
	e->start_ns = start_boottime(t);

	struct mm_struct *mm = BPF_CORE_READ(t, mm);
	e->end_code = BPF_CORE_READ(mm, end_code);

	/* namespaces of the new image, read now (a short-lived process is gone before user space
	 * could read /proc/PID/ns): the mount namespace of its nsproxy, and the active pid namespace
	 * (task_active_pid_ns: thread_pid->numbers[level].ns), as /proc/PID/ns/{mnt,pid} show */
	e->mnt_ns = BPF_CORE_READ(t, nsproxy, mnt_ns, ns.inum);
	e->pid_ns = 0;
	struct pid *tp = BPF_CORE_READ(t, thread_pid);
	if (tp) {
		unsigned int lvl = BPF_CORE_READ(tp, level);
		struct upid up = {};
		if (lvl < 32 && bpf_probe_read_kernel(&up, sizeof(up), &tp->numbers[lvl]) == 0 && up.ns)
			e->pid_ns = BPF_CORE_READ(up.ns, ns.inum);
	}

	/* argv: the NUL-separated strings between arg_start and arg_end of the new image */
	unsigned long as = BPF_CORE_READ(mm, arg_start);
	unsigned long ae = BPF_CORE_READ(mm, arg_end);
	__u32 alen = 0;
	if (ae > as) {
		__u64 n = ae - as;
		if (n > ARGV_MAX) {
			n = ARGV_MAX;
			e->h.flags |= F_ARGV_TRUNC;
		}
		if (bpf_probe_read_user(e->data, n, (void *)as) == 0)
			alen = n;
		else
			e->h.flags |= F_ARGV_FAIL;
	}
	e->argv_len = alen;
	__u32 off = alen;

	/* image: the path of mm->exe_file (what /proc/PID/exe shows) */
	struct file *exe = BPF_CORE_READ(mm, exe_file);
	__u32 ilen = 0;
	if (exe) {
		ilen = walk_path(e->data, w, off, BPF_CORE_READ(exe, f_path.dentry),
				 BPF_CORE_READ(exe, f_path.mnt), &trunc);
		if (trunc)
			e->h.flags |= F_PATH1_TRUNC;
		__u32 leaf = RD(w->leaf);
		if (ilen && (leaf & LEAF_PSEUDO))
			e->h.flags |= F_IMAGE_PSEUDO;
		if (ilen && (leaf & LEAF_DELETED))
			e->h.flags |= F_IMAGE_DELETED;
	}
	if (ilen == 0 && off < DATA_MAX - NAME_CHUNK) {
		/* fall back to the name given to execve (may be relative to the cwd) */
		const char *fn = BPF_CORE_READ(bprm, filename);
		long n = bpf_probe_read_kernel_str(&e->data[off & (DATA_MAX - 1)], NAME_CHUNK, fn);
		if (n > 0) {
			ilen = n;
			e->h.flags |= F_IMAGE_FILENAME;
		}
	}
	e->image_len = ilen;
	off += ilen;

	/* cwd */
	trunc = 0;
	__u32 clen = 0;
	if (off < DATA_MAX) {
		clen = walk_path(e->data, w, off, BPF_CORE_READ(t, fs, pwd.dentry),
				 BPF_CORE_READ(t, fs, pwd.mnt), &trunc);
		if (trunc)
			e->h.flags |= F_PATH2_TRUNC;
	}
	e->cwd_len = clen;
	off += clen;

	__u64 size = offsetof(struct exec_ev, data) + off;
	if (size > sizeof(*e))
		size = sizeof(*e);
	/* the parent as it is now: a fork that has not exec'd (a subshell) is known by its fork
	 * only, sent now, before its own exec (if any) discards it */
	flush_forks(e->ppid);
	output(e, size, EV_EXEC);
	return 0;
}

SEC("tp_btf/sched_process_fork")
int BPF_PROG(on_fork, struct task_struct *parent, struct task_struct *child)
{
	__u32 tgid = BPF_CORE_READ(child, tgid);
	if (BPF_CORE_READ(child, pid) != tgid)
		return 0; /* a new thread, not a new process */
	if (BPF_CORE_READ(child, flags) & PF_KTHREAD)
		return 0;
	/* only needed to attribute what a child does before (or without) an exec, and to name it
	 * as the parent of a child that execs before it does */
	if (!enabled(M_EXEC | M_EXIT | M_NET | M_FILE_CREATE | M_FILE_DELETE | M_RAW_READ |
		     M_PTRACE))
		return 0;
	if (is_excluded(tgid))
		return 0;
	struct fork_info fi = {};
	fi.ts = bpf_ktime_get_boot_ns();
	fi.start_ns = BPF_CORE_READ(child, start_boottime);
	fi.ppid = BPF_CORE_READ(child, real_parent, tgid);
	fi.uid = BPF_CORE_READ(child, cred, uid.val);
	bpf_map_update_elem(&forks, &tgid, &fi, BPF_ANY);
	return 0;
}

SEC("tp_btf/sched_process_exit")
int BPF_PROG(on_exit, struct task_struct *p)
{
	if (!enabled(M_EXIT))
		return 0;
	if (BPF_CORE_READ(p, flags) & PF_KTHREAD)
		return 0;
	if (BPF_CORE_READ(p, signal, live.counter) != 0)
		return 0; /* another thread of the group is still alive */
	__u32 tgid = BPF_CORE_READ(p, tgid);
	if (is_excluded(tgid))
		return 0;
	flush_forks(tgid);
	struct exit_ev *e = reserve(sizeof(*e), EV_EXIT);
	if (!e)
		return 0;
	fill_hdr(&e->h, EV_EXIT);
	e->h.pid = tgid;
	e->h.tid = BPF_CORE_READ(p, pid);
	e->start_ns = start_boottime(p);
	e->exit_code = BPF_CORE_READ(p, exit_code);
	e->pad = 0;
	submit(e, EV_EXIT);
	return 0;
}

/* ------------------------------------------------------------------ syscall exits -------- */

static __always_inline void emit_file_path(struct task_struct *t, struct file *f, __u32 type)
{
	__u32 zero = 0;
	int trunc = 0;
	struct path_ev *e = bpf_map_lookup_elem(&scratch_path, &zero);
	struct walk *w = walk_state();
	if (!e || !w)
		return;
	fill_hdr(&e->h, type);
	e->base_len = 0;
	e->dfd = 0;
	__u32 n = walk_path(e->data, w, 0, BPF_CORE_READ(f, f_path.dentry),
			    BPF_CORE_READ(f, f_path.mnt), &trunc);
	if (trunc)
		e->h.flags |= F_PATH1_TRUNC;
	e->path_len = n;
	__u64 size = offsetof(struct path_ev, data) + n;
	if (size > sizeof(*e))
		size = sizeof(*e);
	flush_forks(e->h.pid);
	output(e, size, type);
}

static __always_inline void on_open_exit(struct task_struct *t, long ret)
{
	if (ret < 0)
		return;
	struct file *f = fd_file(t, ret);
	if (!f)
		return;
	__u32 fmode = BPF_CORE_READ(f, f_mode);
	__u16 imode = BPF_CORE_READ(f, f_inode, i_mode);
	if ((fmode & FMODE_CREATED) && (imode & S_IFMT) == S_IFREG) {
		if (enabled(M_FILE_CREATE))
			emit_file_path(t, f, EV_FILE_CREATE);
	} else if ((imode & S_IFMT) == S_IFBLK && (fmode & FMODE_READ)) {
		if (enabled(M_RAW_READ))
			emit_file_path(t, f, EV_RAW_READ);
	}
}

static __always_inline void on_unlink_exit(struct task_struct *t, long dfd, const char *upath)
{
	__u32 zero = 0;
	int trunc = 0;
	struct path_ev *e = bpf_map_lookup_elem(&scratch_path, &zero);
	struct walk *w = walk_state();
	if (!e || !w)
		return;
	fill_hdr(&e->h, EV_FILE_DELETE);
	e->dfd = dfd;
	long n = bpf_probe_read_user_str(e->data, UPATH_MAX, upath);
	if (n <= 1)
		return;
	e->path_len = n;
	__u32 off = n;
	__u32 blen = 0;
	if (e->data[0] != '/') {
		if (dfd == AT_FDCWD) {
			e->h.flags |= F_BASE_CWD;
			blen = walk_path(e->data, w, off, BPF_CORE_READ(t, fs, pwd.dentry),
					 BPF_CORE_READ(t, fs, pwd.mnt), &trunc);
		} else {
			e->h.flags |= F_BASE_DFD;
			struct file *f = fd_file(t, dfd);
			if (f)
				blen = walk_path(e->data, w, off, BPF_CORE_READ(f, f_path.dentry),
						 BPF_CORE_READ(f, f_path.mnt), &trunc);
		}
		if (trunc)
			e->h.flags |= F_PATH2_TRUNC;
	}
	e->base_len = blen;
	off += blen;
	__u64 size = offsetof(struct path_ev, data) + off;
	if (size > sizeof(*e))
		size = sizeof(*e);
	flush_forks(e->h.pid);
	output(e, size, EV_FILE_DELETE);
}

/* Fill the addresses of a connected/accepted inet socket behind fd; 0 on success. */
static __always_inline int sock_of_fd(struct task_struct *t, long fd, struct net_ev *e)
{
	struct file *f = fd_file(t, fd);
	if (!f)
		return -1;
	__u16 imode = BPF_CORE_READ(f, f_inode, i_mode);
	if ((imode & S_IFMT) != S_IFSOCK)
		return -1;
	struct socket *so = BPF_CORE_READ(f, private_data);
	struct sock *sk = BPF_CORE_READ(so, sk);
	if (!sk)
		return -1;
	__u16 family = BPF_CORE_READ(sk, __sk_common.skc_family);
	__u16 proto = BPF_CORE_READ_BITFIELD_PROBED(sk, sk_protocol);
	if (family != AF_INET && family != AF_INET6)
		return -1;
	if (proto != IPPROTO_TCP && proto != IPPROTO_UDP)
		return -1;
	e->family = family;
	e->proto = proto;
	e->lport = BPF_CORE_READ(sk, __sk_common.skc_num);
	if (e->lport == 0) {
		/*
		 * A TCP connect refused inside connect() (loopback: the SYN and the RST are both
		 * processed before the syscall returns, so a non-blocking connect still returns
		 * -EINPROGRESS) has already gone SYN_SENT -> CLOSE: inet_put_port() released the
		 * ephemeral port and zeroed skc_num. inet_sport keeps the port the kernel chose
		 * (getsockname() reports it, and so does the inet_sock_set_state tracepoint for
		 * that transition), so the event carries the port the packets used, never 0.
		 */
		struct inet_sock *inet = (struct inet_sock *)sk;
		e->lport = bpf_ntohs(BPF_CORE_READ(inet, inet_sport));
	}
	e->rport = bpf_ntohs(BPF_CORE_READ(sk, __sk_common.skc_dport));
	__builtin_memset(e->laddr, 0, sizeof(e->laddr));
	__builtin_memset(e->raddr, 0, sizeof(e->raddr));
	if (family == AF_INET) {
		__u32 l = BPF_CORE_READ(sk, __sk_common.skc_rcv_saddr);
		__u32 r = BPF_CORE_READ(sk, __sk_common.skc_daddr);
		__builtin_memcpy(e->laddr, &l, 4);
		__builtin_memcpy(e->raddr, &r, 4);
	} else {
		BPF_CORE_READ_INTO(&e->laddr, sk, __sk_common.skc_v6_rcv_saddr);
		BPF_CORE_READ_INTO(&e->raddr, sk, __sk_common.skc_v6_daddr);
	}
	return 0;
}

static __always_inline void on_sock_exit(struct task_struct *t, long fd, int initiated)
{
	/* built on the stack first: only sockets we report may count as drops */
	struct net_ev e = {};
	if (sock_of_fd(t, fd, &e) != 0 || e.rport == 0)
		return;
	fill_hdr(&e.h, EV_NET);
	e.initiated = initiated;
	flush_forks(e.h.pid);
	output(&e, sizeof(e), EV_NET);
}

/* A successful ATTACH/SEIZE names two processes: the tracer (the caller) and the target, a pid
 * of the tracer's pid namespace. Both are flushed first, so a target that was only forked (and
 * its parents still held) reaches the process table with its parent before the record that
 * names it, as the tracer does. A tracer in another pid namespace names the target by a pid
 * the forks map (init namespace tgids) does not use: nothing is flushed for it then. A target
 * that is a thread other than its group's leader has no held fork of its own pid. */
static __always_inline void on_ptrace_exit(struct task_struct *t, long request, long target)
{
	flush_forks(bpf_get_current_pid_tgid() >> 32);
	if (target > 0 && BPF_CORE_READ(t, thread_pid, level) == 0)
		flush_forks((__u32)target);
	struct ptrace_ev *e = reserve(sizeof(*e), EV_PTRACE);
	if (!e)
		return;
	fill_hdr(&e->h, EV_PTRACE);
	e->target = target;
	e->pad = 0;
	e->request = request;
	submit(e, EV_PTRACE);
}

SEC("tp_btf/sys_exit")
int BPF_PROG(on_sys_exit, struct pt_regs *regs, long ret)
{
	long nr = SYSCALL_NR(regs);

	if (nr != NR_openat && nr != NR_open && nr != NR_creat && nr != NR_openat2 &&
	    nr != NR_unlinkat && nr != NR_unlink && nr != NR_connect && nr != NR_accept &&
	    nr != NR_accept4 && nr != NR_ptrace)
		return 0;
	if (ret < 0 && !(nr == NR_connect && ret == -EINPROGRESS))
		return 0;
	__u64 pt = bpf_get_current_pid_tgid();
	if (is_excluded(pt >> 32))
		return 0;
	struct task_struct *t = (struct task_struct *)bpf_get_current_task();
#if defined(__TARGET_ARCH_x86)
	if (bpf_core_field_exists(t->thread_info.status) &&
	    (BPF_CORE_READ(t, thread_info.status) & TS_COMPAT))
		return 0; /* 32-bit syscall numbers differ; not decoded */
#endif
	if (nr == NR_openat || nr == NR_open || nr == NR_creat || nr == NR_openat2) {
		on_open_exit(t, ret);
	} else if (nr == NR_unlinkat) {
		if (!enabled(M_FILE_DELETE) || ret != 0)
			return 0;
		if (PT_REGS_PARM3_CORE_SYSCALL(regs) & AT_REMOVEDIR)
			return 0;
		on_unlink_exit(t, (int)PT_REGS_PARM1_CORE_SYSCALL(regs),
			       (const char *)PT_REGS_PARM2_CORE_SYSCALL(regs));
	} else if (nr == NR_unlink) {
		if (!enabled(M_FILE_DELETE) || ret != 0)
			return 0;
		on_unlink_exit(t, AT_FDCWD, (const char *)PT_REGS_PARM1_CORE_SYSCALL(regs));
	} else if (nr == NR_connect) {
		if (enabled(M_NET))
			on_sock_exit(t, (int)PT_REGS_PARM1_CORE_SYSCALL(regs), 1);
	} else if (nr == NR_accept || nr == NR_accept4) {
		if (enabled(M_NET))
			on_sock_exit(t, ret, 0);
	} else if (nr == NR_ptrace) {
		long req = PT_REGS_PARM1_CORE_SYSCALL(regs);
		if (ret == 0 && enabled(M_PTRACE) && (req == PTRACE_ATTACH || req == PTRACE_SEIZE))
			on_ptrace_exit(t, req, PT_REGS_PARM2_CORE_SYSCALL(regs));
	}
	return 0;
}

/* ------------------------------------------------------------------ unconnected UDP ------ */

/*
 * cgroup sock_addr hooks see sendmsg/recvmsg with an explicit address on unconnected UDP
 * sockets (connected ones are reported by connect). Each (tgid, direction, local port, remote
 * address, remote port) is reported once per cfg.udp_interval_ns, like Sysmon for Linux's
 * UDP_REPORT_INTERVAL. They always return 1: never change the traffic.
 */
static __always_inline void udp_event(struct bpf_sock_addr *ctx, int initiated, int v6)
{
	__u32 zero = 0;
	__u64 pt = bpf_get_current_pid_tgid();
	__u32 tgid = pt >> 32;
	struct cfg *c = bpf_map_lookup_elem(&sx_config, &zero);
	if (!c || !(c->mask & M_NET) || tgid == 0 || is_excluded(tgid))
		return;
	struct bpf_sock *sk = ctx->sk;
	if (!sk)
		return;
	struct udp_key k = {};
	k.tgid = tgid;
	k.initiated = initiated;
	k.family = v6 ? AF_INET6 : AF_INET;
	k.lport = sk->src_port;
	k.rport = bpf_ntohs(ctx->user_port);
	if (v6) {
		__u32 a0 = ctx->user_ip6[0], a1 = ctx->user_ip6[1];
		__u32 a2 = ctx->user_ip6[2], a3 = ctx->user_ip6[3];
		__builtin_memcpy(&k.raddr[0], &a0, 4);
		__builtin_memcpy(&k.raddr[4], &a1, 4);
		__builtin_memcpy(&k.raddr[8], &a2, 4);
		__builtin_memcpy(&k.raddr[12], &a3, 4);
	} else {
		__u32 a = ctx->user_ip4;
		__builtin_memcpy(&k.raddr[0], &a, 4);
	}
	__u64 now = bpf_ktime_get_boot_ns();
	__u64 *last = bpf_map_lookup_elem(&udp_seen, &k);
	if (last && now - *last < c->udp_interval_ns)
		return;

	flush_forks(tgid);
	struct net_ev *e = reserve(sizeof(*e), EV_NET);
	if (!e)
		return; /* counted as a drop; the flow stays unreported so the next datagram retries */
	bpf_map_update_elem(&udp_seen, &k, &now, BPF_ANY);
	e->h.type = EV_NET;
	e->h.flags = 0;
	e->h.pid = tgid;
	e->h.tid = (__u32)pt;
	e->h.abi = ABI_VERSION;
	e->h.ts = now;
	e->proto = IPPROTO_UDP;
	e->family = k.family;
	e->initiated = initiated;
	e->pad = 0;
	e->lport = k.lport;
	e->rport = k.rport;
	__builtin_memcpy(e->raddr, k.raddr, 16);
	__builtin_memset(e->laddr, 0, 16);
	if (v6) {
		__u32 l0 = sk->src_ip6[0], l1 = sk->src_ip6[1];
		__u32 l2 = sk->src_ip6[2], l3 = sk->src_ip6[3];
		__builtin_memcpy(&e->laddr[0], &l0, 4);
		__builtin_memcpy(&e->laddr[4], &l1, 4);
		__builtin_memcpy(&e->laddr[8], &l2, 4);
		__builtin_memcpy(&e->laddr[12], &l3, 4);
	} else {
		__u32 l = sk->src_ip4;
		__builtin_memcpy(&e->laddr[0], &l, 4);
	}
	submit(e, EV_NET);
}

SEC("cgroup/sendmsg4")
int on_sendmsg4(struct bpf_sock_addr *ctx)
{
	udp_event(ctx, 1, 0);
	return 1;
}

SEC("cgroup/sendmsg6")
int on_sendmsg6(struct bpf_sock_addr *ctx)
{
	udp_event(ctx, 1, 1);
	return 1;
}

SEC("cgroup/recvmsg4")
int on_recvmsg4(struct bpf_sock_addr *ctx)
{
	udp_event(ctx, 0, 0);
	return 1;
}

SEC("cgroup/recvmsg6")
int on_recvmsg6(struct bpf_sock_addr *ctx)
{
	udp_event(ctx, 0, 1);
	return 1;
}

// SPDX-License-Identifier: GPL-2.0
/*
 * SysmonX tier-A visibility object: the syscall observations beyond Sysmon for Linux's events,
 * from the raw syscall tracepoints tp_btf/sys_enter and tp_btf/sys_exit (like sensor.bpf.c: no
 * tracefs needed, and detaching takes milliseconds; per-syscall tracepoints, attached through
 * perf events, took about 40 ms each to detach). A syscall that is not watched costs one
 * switch on its number. Loaded beside sensor.bpf.c by the ebpf backend
 * (sysmonx/sensor/backends/ebpf_visibility.py decodes these records; keep the structs in step).
 * Native syscalls only (a 32-bit compat process's calls are not seen).
 *
 *   setuid setgid setreuid setregid setresuid setresgid setfsuid setfsgid capset
 *       -> VEV_CRED: the credentials before (enter) and after (exit) a successful call, when
 *          the call gained privilege (a uid/gid became 0, a capability bit was added)  (211)
 *   memfd_create          -> VEV_MEMFD (212)
 *   mmap  PROT_EXEC        -> VEV_IMAGE for a file mapping (ImageLoad 7),
 *                             VEV_EXECMEM for anonymous or writable+executable memory (213)
 *   mprotect PROT_EXEC    -> VEV_EXECMEM when the region is anonymous or was/is writable (213)
 *   process_vm_writev     -> VEV_VMWRITE (CreateRemoteThread 8), bytes written > 0
 *   ptrace POKETEXT/POKEDATA/POKEUSER/SETREGS/SETREGSET -> VEV_VMWRITE (8)
 *   prctl PR_SET_MM EXE_FILE / ARG_START / ARG_END / MAP -> VEV_TAMPER (ProcessTampering 25)
 *   init_module / finit_module -> VEV_MODULE (DriverLoad 6) when they succeed (never on a
 *                             kernel built without module support: they return ENOSYS)
 *
 * Arguments are kept at sys_enter in `stash` (by thread id) and the record is sent at sys_exit,
 * only for calls that succeeded. Drops and sends are counted per type
 * as in sensor.bpf.c.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>

char LICENSE[] SEC("license") = "GPL";

#define VABI_VERSION 1

enum vev_type {
	VEV_CRED = 1,
	VEV_MEMFD = 2,
	VEV_EXECMEM = 3,
	VEV_IMAGE = 4,
	VEV_VMWRITE = 5,
	VEV_TAMPER = 6,
	VEV_MODULE = 7,
	VEV_NTYPES = 8,
};

#define VM_CRED (1u << 0)
#define VM_MEMFD (1u << 1)
#define VM_EXECMEM (1u << 2)
#define VM_IMAGE (1u << 3)
#define VM_VMWRITE (1u << 4)
#define VM_TAMPER (1u << 5)
#define VM_MODULE (1u << 6)

#define DATA_MAX 4096
#define NAME_CHUNK 256
#define PATH_DEPTH 48
#define MEMFD_NAME 256

#define PROT_WRITE 0x2
#define PROT_EXEC 0x4
#define MAP_ANONYMOUS 0x20
#define VM_READ_F 0x1
#define VM_WRITE_F 0x2
#define VM_EXEC_F 0x4
#define PR_SET_MM 35

#if defined(__TARGET_ARCH_x86)
#define NR_setuid 105
#define NR_setgid 106
#define NR_setreuid 113
#define NR_setregid 114
#define NR_setresuid 117
#define NR_setresgid 119
#define NR_setfsuid 122
#define NR_setfsgid 123
#define NR_capset 126
#define NR_memfd_create 319
#define NR_mmap 9
#define NR_mprotect 10
#define NR_process_vm_writev 311
#define NR_ptrace 101
#define NR_prctl 157
#define NR_init_module 175
#define NR_finit_module 313
#define SYSCALL_NR(regs) BPF_CORE_READ((regs), orig_ax)
#define ARG0(r) BPF_CORE_READ((r), di)
#define ARG1(r) BPF_CORE_READ((r), si)
#define ARG2(r) BPF_CORE_READ((r), dx)
#define ARG3(r) BPF_CORE_READ((r), r10)
#define ARG4(r) BPF_CORE_READ((r), r8)
#elif defined(__TARGET_ARCH_arm64)
#define NR_setuid 146
#define NR_setgid 144
#define NR_setreuid 145
#define NR_setregid 143
#define NR_setresuid 147
#define NR_setresgid 149
#define NR_setfsuid 151
#define NR_setfsgid 152
#define NR_capset 91
#define NR_memfd_create 279
#define NR_mmap 222
#define NR_mprotect 226
#define NR_process_vm_writev 271
#define NR_ptrace 117
#define NR_prctl 167
#define NR_init_module 105
#define NR_finit_module 273
#define SYSCALL_NR(regs) BPF_CORE_READ((regs), syscallno)
#define ARG0(r) BPF_CORE_READ((r), orig_x0)
#define ARG1(r) BPF_CORE_READ((r), regs[1])
#define ARG2(r) BPF_CORE_READ((r), regs[2])
#define ARG3(r) BPF_CORE_READ((r), regs[3])
#define ARG4(r) BPF_CORE_READ((r), regs[4])
#else
#error "set -D__TARGET_ARCH_x86 or -D__TARGET_ARCH_arm64"
#endif

/* which syscall a stash entry or record is for (user space names them) */
enum vsys {
	S_SETUID = 1, S_SETGID, S_SETREUID, S_SETREGID, S_SETRESUID, S_SETRESGID, S_SETFSUID,
	S_SETFSGID, S_CAPSET, S_MEMFD, S_MMAP, S_MPROTECT, S_VMWRITEV, S_PTRACE, S_PRCTL,
	S_INIT_MODULE, S_FINIT_MODULE,
};

struct hdr {
	__u16 type;
	__u16 flags;
	__u32 pid;
	__u32 tid;
	__u32 abi;
	__u64 ts;
};

struct cred_ev {
	struct hdr h;
	__u32 sys;
	__u32 kind; /* 0 user, 1 group, 2 capabilities */
	__u64 before[3];
	__u64 after[3];
};

struct memfd_ev {
	struct hdr h;
	__u32 flags;
	__u32 name_len;
	char name[MEMFD_NAME];
};

struct execmem_ev {
	struct hdr h;
	__u32 sys;
	__u32 prot;
	__u32 prev_prot; /* 0xffffffff: unknown (mmap) */
	__u32 pad;
	__u64 addr;
	__u64 len;
};

struct path_ev {
	struct hdr h;
	__u32 sys;
	__u16 path_len;
	__u16 pad;
	char data[DATA_MAX + NAME_CHUNK];
};

struct vmwrite_ev {
	struct hdr h;
	__u32 target;
	__u32 request; /* 0 for process_vm_writev, else the ptrace request */
	__u64 addr;
	__u64 size;
};

struct tamper_ev {
	struct hdr h;
	__u32 option; /* PR_SET_MM_* sub-option */
	__u32 pad;
};

struct stash {
	__u32 sys;
	__u32 flags;
	__u64 a[6];
	__u64 before[3];
	__u64 caps[3];
};

struct cfg {
	__u32 mask;
	__u32 pad;
};

struct counters {
	__u64 n[VEV_NTYPES];
};

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4 * 1024 * 1024);
} vevents SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct counters);
} vdrops SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct counters);
} vsent SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32);
	__type(value, __u8);
} vexcluded SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct cfg);
} vconfig SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u32);
	__type(value, struct stash);
} stash SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct path_ev);
} scratch_vpath SEC(".maps");

#include "pathwalk.bpf.h"

static __always_inline void vcount(void *map, __u32 type)
{
	__u32 zero = 0;
	struct counters *c = bpf_map_lookup_elem(map, &zero);
	if (c && type < VEV_NTYPES)
		__sync_fetch_and_add(&c->n[type], 1);
}

static __always_inline int on(__u32 bit)
{
	__u32 zero = 0;
	struct cfg *c = bpf_map_lookup_elem(&vconfig, &zero);
	if (!c || !(c->mask & bit))
		return 0;
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	return bpf_map_lookup_elem(&vexcluded, &tgid) == NULL;
}

static __always_inline void vhdr(struct hdr *h, __u16 type)
{
	__u64 pt = bpf_get_current_pid_tgid();
	h->type = type;
	h->flags = 0;
	h->pid = pt >> 32;
	h->tid = (__u32)pt;
	h->abi = VABI_VERSION;
	h->ts = bpf_ktime_get_boot_ns();
}

static __always_inline void *vreserve(__u64 size, __u32 type)
{
	void *p = bpf_ringbuf_reserve(&vevents, size, 0);
	if (!p)
		vcount(&vdrops, type);
	return p;
}

static __always_inline void vsubmit(void *p, __u32 type)
{
	bpf_ringbuf_submit(p, 0);
	vcount(&vsent, type);
}

static __always_inline struct stash *put_stash(__u32 sys)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	struct stash zero = {};
	zero.sys = sys;
	bpf_map_update_elem(&stash, &tid, &zero, BPF_ANY);
	return bpf_map_lookup_elem(&stash, &tid);
}

/* The stash of this thread for `sys`, removed from the map (copied to `out`); 0 if none. */
static __always_inline int take_stash(__u32 sys, struct stash *out)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	struct stash *s = bpf_map_lookup_elem(&stash, &tid);
	if (!s)
		return 0;
	int ok = s->sys == sys;
	if (ok)
		__builtin_memcpy(out, s, sizeof(*out));
	bpf_map_delete_elem(&stash, &tid);
	return ok;
}

/* ------------------------------------------------------------ credentials (211) --------- */

static __always_inline void read_creds(__u64 ids[3], __u64 gids[3], __u64 caps[3])
{
	struct task_struct *t = (struct task_struct *)bpf_get_current_task();
	const struct cred *c = BPF_CORE_READ(t, cred);
	ids[0] = BPF_CORE_READ(c, uid.val);
	ids[1] = BPF_CORE_READ(c, euid.val);
	ids[2] = BPF_CORE_READ(c, suid.val);
	gids[0] = BPF_CORE_READ(c, gid.val);
	gids[1] = BPF_CORE_READ(c, egid.val);
	gids[2] = BPF_CORE_READ(c, sgid.val);
	kernel_cap_t e = BPF_CORE_READ(c, cap_effective);
	kernel_cap_t p = BPF_CORE_READ(c, cap_permitted);
	kernel_cap_t i = BPF_CORE_READ(c, cap_inheritable);
	__builtin_memcpy(&caps[0], &e, sizeof(__u64));
	__builtin_memcpy(&caps[1], &p, sizeof(__u64));
	__builtin_memcpy(&caps[2], &i, sizeof(__u64));
}

static __always_inline int cred_enter(__u32 sys)
{
	if (!on(VM_CRED))
		return 0;
	struct stash *s = put_stash(sys);
	if (!s)
		return 0;
	__u64 ids[3], gids[3], caps[3];
	read_creds(ids, gids, caps);
	if (sys == S_CAPSET) {
		s->before[0] = caps[0];
		s->before[1] = caps[1];
		s->before[2] = caps[2];
	} else if (sys == S_SETGID || sys == S_SETREGID || sys == S_SETRESGID || sys == S_SETFSGID) {
		s->before[0] = gids[0];
		s->before[1] = gids[1];
		s->before[2] = gids[2];
	} else {
		s->before[0] = ids[0];
		s->before[1] = ids[1];
		s->before[2] = ids[2];
	}
	return 0;
}

static __always_inline int cred_exit(__u32 sys)
{
	struct stash s;
	if (!take_stash(sys, &s))
		return 0;
	__u64 ids[3], gids[3], caps[3];
	read_creds(ids, gids, caps);
	__u32 kind = 0;
	__u64 *now = ids;
	if (sys == S_CAPSET) {
		kind = 2;
		now = caps;
	} else if (sys == S_SETGID || sys == S_SETREGID || sys == S_SETRESGID || sys == S_SETFSGID) {
		kind = 1;
		now = gids;
	}
	int gained = 0;
	if (kind == 2) {
		/* a bit added to the effective or permitted set */
		gained = (now[0] & ~s.before[0]) || (now[1] & ~s.before[1]);
	} else {
		/* a real or effective id became 0 */
		gained = (now[0] == 0 && s.before[0] != 0) || (now[1] == 0 && s.before[1] != 0);
	}
	if (!gained)
		return 0;
	struct cred_ev *e = vreserve(sizeof(*e), VEV_CRED);
	if (!e)
		return 0;
	vhdr(&e->h, VEV_CRED);
	e->sys = sys;
	e->kind = kind;
	e->before[0] = s.before[0];
	e->before[1] = s.before[1];
	e->before[2] = s.before[2];
	e->after[0] = now[0];
	e->after[1] = now[1];
	e->after[2] = now[2];
	vsubmit(e, VEV_CRED);
	return 0;
}



/* ------------------------------------------------------------ memfd_create (212) -------- */

static __always_inline int enter_memfd_create(struct pt_regs *regs)
{
	if (!on(VM_MEMFD))
		return 0;
	struct stash *s = put_stash(S_MEMFD);
	if (s) {
		s->a[0] = ARG0(regs);
		s->a[1] = ARG1(regs);
	}
	return 0;
}

static __always_inline int exit_memfd_create(long ret)
{
	struct stash s;
	if (!take_stash(S_MEMFD, &s) || ret < 0)
		return 0;
	struct memfd_ev *e = vreserve(sizeof(*e), VEV_MEMFD);
	if (!e)
		return 0;
	vhdr(&e->h, VEV_MEMFD);
	e->flags = (__u32)s.a[1];
	long n = bpf_probe_read_user_str(e->name, sizeof(e->name), (const char *)s.a[0]);
	e->name_len = n > 0 ? (__u32)n : 0;
	vsubmit(e, VEV_MEMFD);
	return 0;
}

/* ------------------------------------------------------------ mmap / mprotect (7, 213) -- */

static __always_inline int enter_mmap(struct pt_regs *regs)
{
	__u64 prot = ARG2(regs);
	if (!(prot & PROT_EXEC))
		return 0;
	__u64 flags = ARG3(regs);
	long fd = (long)ARG4(regs);
	int file = !(flags & MAP_ANONYMOUS) && fd >= 0;
	int want = (file && on(VM_IMAGE)) ||
		   ((!file || (prot & PROT_WRITE)) && on(VM_EXECMEM));
	if (!want)
		return 0;
	struct stash *s = put_stash(S_MMAP);
	if (s) {
		s->a[0] = ARG0(regs);
		s->a[1] = ARG1(regs);
		s->a[2] = prot;
		s->a[3] = flags;
		s->a[4] = fd;
	}
	return 0;
}

static __always_inline void send_execmem(__u32 sys, __u64 addr, __u64 len, __u32 prot,
					 __u32 prev)
{
	struct execmem_ev *e = vreserve(sizeof(*e), VEV_EXECMEM);
	if (!e)
		return;
	vhdr(&e->h, VEV_EXECMEM);
	e->sys = sys;
	e->prot = prot;
	e->prev_prot = prev;
	e->pad = 0;
	e->addr = addr;
	e->len = len;
	vsubmit(e, VEV_EXECMEM);
}

static __always_inline int exit_mmap(long ret)
{
	struct stash s;
	if (!take_stash(S_MMAP, &s))
		return 0;
	if (ret < 0 && ret > -4096)
		return 0;
	__u64 prot = s.a[2];
	long fd = (long)s.a[4];
	int file = !(s.a[3] & MAP_ANONYMOUS) && fd >= 0;
	if (!file || (prot & PROT_WRITE)) {
		if (on(VM_EXECMEM))
			send_execmem(S_MMAP, (__u64)ret, s.a[1], (__u32)prot, 0xffffffff);
	}
	if (!file || !on(VM_IMAGE))
		return 0;
	__u32 zero = 0;
	struct path_ev *e = bpf_map_lookup_elem(&scratch_vpath, &zero);
	struct walk *w = walk_state();
	if (!e || !w)
		return 0;
	struct task_struct *t = (struct task_struct *)bpf_get_current_task();
	struct file *f = fd_file(t, fd);
	if (!f)
		return 0;
	int trunc = 0;
	vhdr(&e->h, VEV_IMAGE);
	e->sys = S_MMAP;
	__u32 n = walk_path(e->data, w, 0, BPF_CORE_READ(f, f_path.dentry),
			    BPF_CORE_READ(f, f_path.mnt), &trunc);
	if (trunc)
		e->h.flags |= 1;
	if (w->leaf == LEAF_PSEUDO)
		e->h.flags |= 2;
	if (w->leaf == LEAF_DELETED)
		e->h.flags |= 4;
	e->path_len = n > DATA_MAX ? DATA_MAX : n;
	__u64 size = offsetof(struct path_ev, data) + (e->path_len & (DATA_MAX - 1));
	if (e->path_len == DATA_MAX)
		size = offsetof(struct path_ev, data) + DATA_MAX;
	if (bpf_ringbuf_output(&vevents, e, size, 0) == 0)
		vcount(&vsent, VEV_IMAGE);
	else
		vcount(&vdrops, VEV_IMAGE);
	return 0;
}

struct vma_probe {
	__u64 flags;
	int anon;
	int found;
};

static long vma_cb(struct task_struct *task, struct vm_area_struct *vma, void *data)
{
	struct vma_probe *p = data;
	p->flags = BPF_CORE_READ(vma, vm_flags);
	p->anon = BPF_CORE_READ(vma, vm_file) == NULL;
	p->found = 1;
	return 0;
}

static __always_inline int enter_mprotect(struct pt_regs *regs)
{
	__u64 prot = ARG2(regs);
	if (!(prot & PROT_EXEC) || !on(VM_EXECMEM))
		return 0;
	struct vma_probe p = {};
	struct task_struct *t = bpf_get_current_task_btf();
	__u64 start = ARG0(regs);
	bpf_find_vma(t, start, vma_cb, &p, 0);
	if (!p.found)
		return 0;
	/* anonymous memory made executable, or memory that was or becomes writable */
	if (!p.anon && !(p.flags & VM_WRITE_F) && !(prot & PROT_WRITE))
		return 0;
	struct stash *s = put_stash(S_MPROTECT);
	if (s) {
		s->a[0] = start;
		s->a[1] = ARG1(regs);
		s->a[2] = prot;
		s->a[3] = p.flags & (VM_READ_F | VM_WRITE_F | VM_EXEC_F);
	}
	return 0;
}

static __always_inline int exit_mprotect(long ret)
{
	struct stash s;
	if (!take_stash(S_MPROTECT, &s) || ret != 0)
		return 0;
	send_execmem(S_MPROTECT, s.a[0], s.a[1], (__u32)s.a[2], (__u32)s.a[3]);
	return 0;
}

/* ------------------------------------------------------------ remote writes (8) ---------- */

static __always_inline int enter_vm_writev(struct pt_regs *regs)
{
	if (!on(VM_VMWRITE))
		return 0;
	struct stash *s = put_stash(S_VMWRITEV);
	if (!s)
		return 0;
	s->a[0] = ARG0(regs); /* pid */
	struct iovec iov = {};
	if (ARG4(regs) > 0)
		bpf_probe_read_user(&iov, sizeof(iov), (const void *)ARG3(regs));
	s->a[1] = (__u64)iov.iov_base;
	return 0;
}

static __always_inline void send_vmwrite(__u32 target, __u32 request, __u64 addr, __u64 size)
{
	struct vmwrite_ev *e = vreserve(sizeof(*e), VEV_VMWRITE);
	if (!e)
		return;
	vhdr(&e->h, VEV_VMWRITE);
	e->target = target;
	e->request = request;
	e->addr = addr;
	e->size = size;
	vsubmit(e, VEV_VMWRITE);
}

static __always_inline int exit_vm_writev(long ret)
{
	struct stash s;
	if (!take_stash(S_VMWRITEV, &s) || ret <= 0)
		return 0;
	if ((__u32)s.a[0] == (__u32)(bpf_get_current_pid_tgid() >> 32))
		return 0; /* its own memory */
	send_vmwrite((__u32)s.a[0], 0, s.a[1], (__u64)ret);
	return 0;
}

#define PTRACE_POKETEXT 4
#define PTRACE_POKEDATA 5
#define PTRACE_POKEUSR 6
#define PTRACE_SETREGS 13
#define PTRACE_SETREGSET 0x4205

static __always_inline int enter_ptrace(struct pt_regs *regs)
{
	long req = (long)ARG0(regs);
	if (req != PTRACE_POKETEXT && req != PTRACE_POKEDATA && req != PTRACE_POKEUSR &&
	    req != PTRACE_SETREGS && req != PTRACE_SETREGSET)
		return 0;
	if (!on(VM_VMWRITE))
		return 0;
	struct stash *s = put_stash(S_PTRACE);
	if (s) {
		s->a[0] = req;
		s->a[1] = ARG1(regs); /* pid */
		s->a[2] = ARG2(regs); /* addr */
	}
	return 0;
}

static __always_inline int exit_ptrace(long ret)
{
	struct stash s;
	if (!take_stash(S_PTRACE, &s) || ret != 0)
		return 0;
	__u64 size = (s.a[0] == PTRACE_POKETEXT || s.a[0] == PTRACE_POKEDATA) ? 8 : 0;
	send_vmwrite((__u32)s.a[1], (__u32)s.a[0], s.a[2], size);
	return 0;
}

/* ------------------------------------------------------------ prctl PR_SET_MM (25) ------- */

static __always_inline int enter_prctl(struct pt_regs *regs)
{
	if (ARG0(regs) != PR_SET_MM || !on(VM_TAMPER))
		return 0;
	__u64 sub = ARG1(regs);
	if (sub != 8 && sub != 9 && sub != 13 && sub != 14) /* ARG_START ARG_END EXE_FILE MAP */
		return 0;
	struct stash *s = put_stash(S_PRCTL);
	if (s)
		s->a[0] = sub;
	return 0;
}

static __always_inline int exit_prctl(long ret)
{
	struct stash s;
	if (!take_stash(S_PRCTL, &s) || ret != 0)
		return 0;
	struct tamper_ev *e = vreserve(sizeof(*e), VEV_TAMPER);
	if (!e)
		return 0;
	vhdr(&e->h, VEV_TAMPER);
	e->option = (__u32)s.a[0];
	e->pad = 0;
	vsubmit(e, VEV_TAMPER);
	return 0;
}

/* ------------------------------------------------------------ modules (6) ---------------- */

static __always_inline int enter_finit_module(struct pt_regs *regs)
{
	if (!on(VM_MODULE))
		return 0;
	struct stash *s = put_stash(S_FINIT_MODULE);
	if (s)
		s->a[0] = ARG0(regs);
	return 0;
}

static __always_inline int exit_finit_module(long ret)
{
	struct stash s;
	if (!take_stash(S_FINIT_MODULE, &s) || ret != 0)
		return 0;
	__u32 zero = 0;
	struct path_ev *e = bpf_map_lookup_elem(&scratch_vpath, &zero);
	struct walk *w = walk_state();
	if (!e || !w)
		return 0;
	struct task_struct *t = (struct task_struct *)bpf_get_current_task();
	struct file *f = fd_file(t, (long)s.a[0]);
	int trunc = 0;
	vhdr(&e->h, VEV_MODULE);
	e->sys = S_FINIT_MODULE;
	__u32 n = 0;
	if (f)
		n = walk_path(e->data, w, 0, BPF_CORE_READ(f, f_path.dentry),
			      BPF_CORE_READ(f, f_path.mnt), &trunc);
	e->path_len = n > DATA_MAX ? DATA_MAX : n;
	__u64 size = offsetof(struct path_ev, data) + (e->path_len & (DATA_MAX - 1));
	if (bpf_ringbuf_output(&vevents, e, size, 0) == 0)
		vcount(&vsent, VEV_MODULE);
	else
		vcount(&vdrops, VEV_MODULE);
	return 0;
}

static __always_inline int enter_init_module(void)
{
	if (on(VM_MODULE))
		put_stash(S_INIT_MODULE);
	return 0;
}

static __always_inline int exit_init_module(long ret)
{
	struct stash s;
	if (!take_stash(S_INIT_MODULE, &s) || ret != 0)
		return 0;
	struct path_ev *e = vreserve(offsetof(struct path_ev, data), VEV_MODULE);
	if (!e)
		return 0;
	vhdr(&e->h, VEV_MODULE);
	e->sys = S_INIT_MODULE;
	e->path_len = 0;
	e->pad = 0;
	vsubmit(e, VEV_MODULE);
	return 0;
}

/* ------------------------------------------------------------ dispatch -------------------- */

SEC("tp_btf/sys_enter")
int BPF_PROG(vis_enter, struct pt_regs *regs, long id)
{
	switch (id) {
	case NR_setuid: return cred_enter(S_SETUID);
	case NR_setgid: return cred_enter(S_SETGID);
	case NR_setreuid: return cred_enter(S_SETREUID);
	case NR_setregid: return cred_enter(S_SETREGID);
	case NR_setresuid: return cred_enter(S_SETRESUID);
	case NR_setresgid: return cred_enter(S_SETRESGID);
	case NR_setfsuid: return cred_enter(S_SETFSUID);
	case NR_setfsgid: return cred_enter(S_SETFSGID);
	case NR_capset: return cred_enter(S_CAPSET);
	case NR_memfd_create: return enter_memfd_create(regs);
	case NR_mmap: return enter_mmap(regs);
	case NR_mprotect: return enter_mprotect(regs);
	case NR_process_vm_writev: return enter_vm_writev(regs);
	case NR_ptrace: return enter_ptrace(regs);
	case NR_prctl: return enter_prctl(regs);
	case NR_init_module: return enter_init_module();
	case NR_finit_module: return enter_finit_module(regs);
	}
	return 0;
}

SEC("tp_btf/sys_exit")
int BPF_PROG(vis_exit, struct pt_regs *regs, long ret)
{
	long id = SYSCALL_NR(regs);
	switch (id) {
	case NR_setuid: return cred_exit(S_SETUID);
	case NR_setgid: return cred_exit(S_SETGID);
	case NR_setreuid: return cred_exit(S_SETREUID);
	case NR_setregid: return cred_exit(S_SETREGID);
	case NR_setresuid: return cred_exit(S_SETRESUID);
	case NR_setresgid: return cred_exit(S_SETRESGID);
	case NR_setfsuid: return cred_exit(S_SETFSUID);
	case NR_setfsgid: return cred_exit(S_SETFSGID);
	case NR_capset: return cred_exit(S_CAPSET);
	case NR_memfd_create: return exit_memfd_create(ret);
	case NR_mmap: return exit_mmap(ret);
	case NR_mprotect: return exit_mprotect(ret);
	case NR_process_vm_writev: return exit_vm_writev(ret);
	case NR_ptrace: return exit_ptrace(ret);
	case NR_prctl: return exit_prctl(ret);
	case NR_init_module: return exit_init_module(ret);
	case NR_finit_module: return exit_finit_module(ret);
	}
	return 0;
}

/* Technique programs for the scanner tests: each mode performs one real technique on itself
 * (or, with --control, the same program without it), then creates TAGFILE (a FileCreate the live
 * sensor sees *after* the technique), prints "ready" and sleeps. No malware: every technique is a
 * few system calls on the program's own memory.
 *
 *   technique MODE TAGFILE [--control]
 *   technique tracer PID            attach to PID with PTRACE_SEIZE and wait
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/ptrace.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

static volatile char *keep;

__attribute__((noinline)) int never_called(int x) { return x * 7 + 3; }

static void tag_and_wait(const char *tagfile) {
    int fd = open(tagfile, O_CREAT | O_WRONLY | O_TRUNC, 0600);
    if (fd >= 0) close(fd);
    printf("ready %d\n", getpid());
    fflush(stdout);
    sleep(60);
}

static void die(const char *what) { perror(what); exit(3); }

static long tracer_pid(void) {
    char line[256];
    FILE *f = fopen("/proc/self/status", "r");
    long t = 0;
    while (f && fgets(line, sizeof line, f))
        if (!strncmp(line, "TracerPid:", 10)) t = atol(line + 10);
    if (f) fclose(f);
    return t;
}

int main(int argc, char **argv) {
    if (argc >= 3 && !strcmp(argv[1], "tracer")) {
        pid_t pid = atoi(argv[2]);
        if (ptrace(PTRACE_SEIZE, pid, 0, 0) != 0) die("PTRACE_SEIZE");
        printf("attached\n");
        fflush(stdout);
        sleep(60);
        return 0;
    }
    if (argc < 3) { fprintf(stderr, "usage: technique MODE TAGFILE [--control]\n"); return 2; }
    const char *mode = argv[1], *tag = strdup(argv[2]);  /* argv may be overwritten */
    int control = argc > 3 && !strcmp(argv[3], "--control");
    long page = sysconf(_SC_PAGESIZE);

    if (!strcmp(mode, "memfd") && !control) {          /* exec from a memfd */
        int src = open("/proc/self/exe", O_RDONLY);
        int mfd = (int)syscall(SYS_memfd_create, "sxscan", 0);
        if (src < 0 || mfd < 0) die("memfd");
        char buf[65536];
        ssize_t n;
        while ((n = read(src, buf, sizeof buf)) > 0)
            if (write(mfd, buf, n) != n) die("write");
        char *args[] = {argv[0], "plain", (char *)tag, "--control", NULL};
        extern char **environ;
        syscall(SYS_execveat, mfd, "", args, environ, AT_EMPTY_PATH);
        die("execveat");
    } else if (!strcmp(mode, "deleted") && !control) { /* unlink the running image */
        char self[4096];
        ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
        if (n <= 0) die("readlink");
        self[n] = 0;
        if (unlink(self) != 0) die("unlink");
    } else if (!strcmp(mode, "anon") && !control) {    /* RW anonymous memory turned RX */
        unsigned char *p = mmap(NULL, 2 * page, PROT_READ | PROT_WRITE,
                                MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED) die("mmap");
        memset(p, 0xC3, 2 * page);                      /* ret */
        if (mprotect(p, 2 * page, PROT_READ | PROT_EXEC) != 0) die("mprotect");
        keep = (char *)p;
    } else if (!strcmp(mode, "rwx") && !control) {     /* writable and executable at once */
        char *p = mmap(NULL, 3 * page, PROT_READ | PROT_WRITE | PROT_EXEC,
                       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED) die("mmap");
        p[0] = (char)0xC3;
        keep = p;
    } else if (!strcmp(mode, "elf")) {                  /* an ELF image copied into anon memory */
        size_t size = 64 * page;
        unsigned char *p = mmap(NULL, size, PROT_READ | PROT_WRITE,
                                MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED) die("mmap");
        int src = open("/proc/self/exe", O_RDONLY);
        if (src < 0) die("open");
        /* the control copies the same bytes one byte off a page start */
        size_t at = 5 * page + (control ? 1 : 0);
        if (read(src, p + at, size - at - page) <= 0) die("read");
        keep = (char *)p;
    } else if (!strcmp(mode, "text") && !control) {    /* patch 4 bytes of its own code */
        int fd = open("/proc/self/mem", O_RDWR);
        if (fd < 0) die("open /proc/self/mem");
        unsigned char patch[4] = {0x90, 0x90, 0x0F, 0x0B};  /* nop nop ud2 */
        if (pwrite(fd, patch, 4, (off_t)(unsigned long)&never_called) != 4) die("pwrite");
        close(fd);
    } else if (!strcmp(mode, "ptrace")) {               /* wait until a tracer attached */
        if (!control) {
            printf("waiting %d\n", getpid());
            fflush(stdout);
            for (int i = 0; i < 3000 && tracer_pid() == 0; i++) usleep(10000);
            if (tracer_pid() == 0) die("no tracer");
        }
    } else if (!strcmp(mode, "argv") && !control) {    /* overwrite its own argv after exec */
        size_t n = strlen(argv[2]);
        memset(argv[2], 0, n);
        memcpy(argv[2], "/tmp/harmless", n < 13 ? n : 13);
    } else if (!strcmp(mode, "yara")) {                 /* hold a marker a rule matches */
        char *m = malloc(64);
        snprintf(m, 64, "%s%s%d", "SYSMONX_YARA_", control ? "OTHER_" : "MARKER_", 4242);
        keep = m;
    }
    /* "plain", "preload" (the technique is the environment), "writable" (where the test put
     * the program) and every --control: nothing more to do */
    (void)never_called;
    tag_and_wait(tag);
    return 0;
}

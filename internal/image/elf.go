package image

import (
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"
)

// runtimeFile is a file an ELF program needs to start: where the dynamic
// loader looks for it (its name in the image) and the real file on this
// machine (symlinks followed) that goes there.
type runtimeFile struct {
	name   string // absolute, as the loader opens it
	source string // a regular file on this machine
}

// elfInfo is what the dependency walk reads from one ELF file.
type elfInfo struct {
	class   elf.Class
	machine elf.Machine
	interp  string   // PT_INTERP; "" for a static program or a library
	soname  string   // DT_SONAME
	needed  []string // DT_NEEDED
	runpath []string // DT_RUNPATH, else DT_RPATH, $ORIGIN expanded
}

func readELF(file string) (*elfInfo, error) {
	f, err := elf.Open(file)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	info := &elfInfo{class: f.Class, machine: f.Machine}
	for _, p := range f.Progs {
		if p.Type != elf.PT_INTERP {
			continue
		}
		b, err := io.ReadAll(p.Open())
		if err != nil {
			return nil, fmt.Errorf("read its program interpreter: %w", err)
		}
		info.interp = strings.TrimRight(string(b), "\x00")
	}
	// A file without a dynamic section has none of these (nil, no error).
	if info.needed, err = f.DynString(elf.DT_NEEDED); err != nil {
		return nil, fmt.Errorf("read its DT_NEEDED entries: %w", err)
	}
	if s, _ := f.DynString(elf.DT_SONAME); len(s) > 0 {
		info.soname = s[0]
	}
	rp, _ := f.DynString(elf.DT_RUNPATH)
	if len(rp) == 0 {
		rp, _ = f.DynString(elf.DT_RPATH)
	}
	origin := filepath.Dir(file)
	for _, list := range rp {
		for _, d := range strings.Split(list, ":") {
			d = strings.ReplaceAll(strings.ReplaceAll(d, "${ORIGIN}", origin), "$ORIGIN", origin)
			if path.IsAbs(d) {
				info.runpath = append(info.runpath, path.Clean(d))
			}
		}
	}
	return info, nil
}

// LibraryDirs are the directories the GNU dynamic loader searches by
// default for a program of machine m (what `ld.so --help` calls the system
// search path: Debian's multiarch directories, then the lib64 and plain ones
// of other distributions). A library found in one is placed in the image
// under the same directory, where the image's loader (this machine's own)
// searches it too, with no /etc/ld.so.cache.
func LibraryDirs(m elf.Machine) []string {
	var dirs []string
	if t := multiarchTriplet(m); t != "" {
		dirs = append(dirs, "/lib/"+t, "/usr/lib/"+t)
	}
	return append(dirs, "/lib64", "/usr/lib64", "/lib", "/usr/lib")
}

func multiarchTriplet(m elf.Machine) string {
	switch m {
	case elf.EM_X86_64:
		return "x86_64-linux-gnu"
	case elf.EM_AARCH64:
		return "aarch64-linux-gnu"
	case elf.EM_PPC64:
		return "powerpc64le-linux-gnu"
	case elf.EM_S390:
		return "s390x-linux-gnu"
	case elf.EM_RISCV:
		return "riscv64-linux-gnu"
	}
	return ""
}

// GoArch is the image platform's architecture (GOARCH's spelling) for an
// ELF machine: it must match the binary, or containerd's platform matcher
// refuses the image.
func GoArch(m elf.Machine, data elf.Data) (string, error) {
	switch m {
	case elf.EM_X86_64:
		return "amd64", nil
	case elf.EM_AARCH64:
		return "arm64", nil
	case elf.EM_386:
		return "386", nil
	case elf.EM_ARM:
		return "arm", nil
	case elf.EM_PPC64:
		if data == elf.ELFDATA2LSB {
			return "ppc64le", nil
		}
		return "ppc64", nil
	case elf.EM_S390:
		return "s390x", nil
	case elf.EM_RISCV:
		return "riscv64", nil
	}
	return "", fmt.Errorf("unsupported ELF machine %s", m)
}

// runtimeFiles lists what the dynamic loader loads to start program: its
// interpreter (PT_INTERP) and every DT_NEEDED library, recursively, each
// resolved as the loader resolves it (the requester's DT_RUNPATH or
// DT_RPATH, then dirs; a file of another class or machine is skipped, as
// the loader skips it). dirs nil means LibraryDirs of the program's
// machine. /etc/ld.so.cache is not read: the image has none, so a library
// only it knows (one under a directory of /etc/ld.so.conf.d) would not load
// there either, and is reported as not found. A static program needs
// nothing.
func runtimeFiles(program string, dirs []string) ([]runtimeFile, error) {
	prog, err := readELF(program)
	if err != nil {
		return nil, fmt.Errorf("%q is not an ELF program this can read: %w", program, err)
	}
	if prog.interp == "" {
		return nil, nil
	}
	if dirs == nil {
		dirs = LibraryDirs(prog.machine)
	}
	var files []runtimeFile
	have := map[string]bool{} // names in the image
	add := func(name, source string) error {
		real, err := filepath.EvalSymlinks(source)
		if err != nil {
			return err
		}
		if !have[name] {
			have[name] = true
			files = append(files, runtimeFile{name: name, source: real})
		}
		return nil
	}

	if err := add(prog.interp, prog.interp); err != nil {
		return nil, fmt.Errorf("program interpreter %q of %q: %w", prog.interp, program, err)
	}
	interp, err := readELF(prog.interp)
	if err != nil {
		return nil, fmt.Errorf("program interpreter %q of %q: %w", prog.interp, program, err)
	}
	// The loader is loaded already and answers to its soname: a library
	// that needs ld-linux-x86-64.so.2 gets it without a search.
	loaded := map[string]bool{interp.soname: true}

	type todo struct {
		lib, by string
		info    *elfInfo
	}
	var queue []todo
	for _, n := range prog.needed {
		queue = append(queue, todo{n, program, prog})
	}
	for len(queue) > 0 {
		t := queue[0]
		queue = queue[1:]
		if loaded[t.lib] {
			continue
		}
		name, info, err := findLibrary(t.lib, t.info, prog, dirs)
		if err != nil {
			return nil, fmt.Errorf("library %q needed by %q: %w", t.lib, t.by, err)
		}
		loaded[t.lib] = true
		if info.soname != "" {
			loaded[info.soname] = true
		}
		if err := add(name, name); err != nil {
			return nil, fmt.Errorf("library %q needed by %q: %w", t.lib, t.by, err)
		}
		for _, n := range info.needed {
			queue = append(queue, todo{n, name, info})
		}
	}
	return files, nil
}

// findLibrary resolves the DT_NEEDED entry lib of the object by: a path
// (with a slash) is taken as it is; a name is searched in by's run path,
// then dirs, for a file of prog's class and machine.
func findLibrary(lib string, by, prog *elfInfo, dirs []string) (string, *elfInfo, error) {
	var candidates []string
	if strings.Contains(lib, "/") {
		candidates = []string{lib}
	} else {
		for _, d := range append(append([]string(nil), by.runpath...), dirs...) {
			candidates = append(candidates, path.Join(d, lib))
		}
	}
	var skipped []string
	for _, c := range candidates {
		info, err := readELF(c)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			skipped = append(skipped, fmt.Sprintf("%s (%v)", c, err))
			continue
		}
		if info.class != prog.class || info.machine != prog.machine {
			skipped = append(skipped, fmt.Sprintf("%s (%s %s, not the program's %s %s)", c, info.class, info.machine, prog.class, prog.machine))
			continue
		}
		return c, info, nil
	}
	searched := strings.Join(append(append([]string(nil), by.runpath...), dirs...), ", ")
	msg := fmt.Sprintf("not found in %s", searched)
	if strings.Contains(lib, "/") {
		msg = "not found"
	}
	if len(skipped) > 0 {
		msg += "; skipped " + strings.Join(skipped, ", ")
	}
	return "", nil, fmt.Errorf("%s: install the package that provides it on this machine, where the loader finds it (/etc/ld.so.cache is not searched: the image has none)", msg)
}

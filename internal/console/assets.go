package console

import (
	"embed"
	"io/fs"
	"net/http"
	"path"
	"strings"
)

// dist is the built single-page app (`make console` writes it from
// console/); the folder holds only .gitkeep in a fresh checkout, so `go
// build` works without npm and serves placeholder.html instead.
//
//go:embed all:dist placeholder.html
var embedded embed.FS

// Assets is the embedded app, or the placeholder page when it was not built.
func Assets() fs.FS {
	dist, err := fs.Sub(embedded, "dist")
	if err == nil {
		if _, err := fs.Stat(dist, "index.html"); err == nil {
			return dist
		}
	}
	return placeholderFS{}
}

// placeholderFS serves placeholder.html as index.html.
type placeholderFS struct{}

func (placeholderFS) Open(name string) (fs.File, error) {
	if name == "index.html" {
		return embedded.Open("placeholder.html")
	}
	return nil, &fs.PathError{Op: "open", Path: name, Err: fs.ErrNotExist}
}

// serveApp serves the app's files; any other path gets index.html, so that
// every page's URL (/workloads, /pods/NS/NAME …) can be shared and reloaded.
func serveApp(assets fs.FS) http.Handler {
	files := http.FileServer(http.FS(assets))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		name := strings.TrimPrefix(path.Clean(r.URL.Path), "/")
		if name != "" && name != "index.html" {
			if st, err := fs.Stat(assets, name); err == nil && !st.IsDir() {
				if strings.HasPrefix(name, "assets/") {
					// Vite names them by content hash.
					w.Header().Set("Cache-Control", "public, max-age=31536000, immutable")
				}
				files.ServeHTTP(w, r)
				return
			}
		}
		index, err := fs.ReadFile(assets, "index.html")
		if err != nil {
			http.Error(w, "console assets missing: run `make console`", http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Cache-Control", "no-cache")
		_, _ = w.Write(index)
	})
}

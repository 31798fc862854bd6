package runtime

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"

	v1 "k8s.io/api/core/v1"
	crilogs "k8s.io/cri-client/pkg/logs"
	kubecontainer "k8s.io/kubernetes/pkg/kubelet/container"
	"k8s.io/kubernetes/pkg/util/tail"
)

// Termination messages, as the kubelet makes them: a container may write
// why it ended to its terminationMessagePath (default /dev/termination-log,
// a file of the pod's folder bind-mounted there); when it ends, the last
// 4 KiB of that file become its terminated state's message. Under the
// FallbackToLogsOnError policy a container that failed without writing one
// gets the end of its log instead: the last 80 lines, at most 2 KiB. The
// messages of a pod share 12 KiB between its containers.

// terminationPath is the host file behind a container's terminationMessagePath.
func (r *Runtime) terminationPath(pod *v1.Pod, container string) string {
	return filepath.Join(r.podDir(pod.UID), "termination", container)
}

// resetTerminationFile empties the container's termination file before a
// run, so that a message left by an earlier run is not taken for this one's.
func (r *Runtime) resetTerminationFile(pod *v1.Pod, container string) (string, error) {
	p := r.terminationPath(pod, container)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return "", err
	}
	// Writable by any user the container runs as, as the kubelet's is.
	f, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o666)
	if err != nil {
		return "", err
	}
	if err := f.Chmod(0o666); err != nil {
		f.Close()
		return "", err
	}
	return p, f.Close()
}

// terminationMessage is the message of a run of container c that ended with
// code and wrote its output to logPath.
func (r *Runtime) terminationMessage(pod *v1.Pod, c *v1.Container, code int32, logPath string) string {
	fallback := c.TerminationMessagePolicy == v1.TerminationMessageFallbackToLogsOnError && code != 0
	var msg string
	if c.TerminationMessagePath != "" {
		data, _, err := tail.ReadAtMost(r.terminationPath(pod, c.Name), kubecontainer.MaxContainerTerminationMessageLength)
		switch {
		case err == nil:
			msg = string(data)
		case !os.IsNotExist(err):
			return fmt.Sprintf("Error on reading termination log: %v", err)
		}
	}
	if msg == "" && fallback {
		if !isCRILog(logPath) {
			data, _, err := tail.ReadAtMost(logPath, kubecontainer.MaxContainerTerminationMessageLogLength)
			if err != nil && !os.IsNotExist(err) {
				return fmt.Sprintf("Error on reading termination message from logs: %v", err)
			}
			msg = string(lastLines(data, kubecontainer.MaxContainerTerminationMessageLogLines))
		} else if _, err := os.Stat(logPath); err == nil {
			// As the kubelet's readLastStringFromContainerLogs: the last
			// lines of the log, at most so many bytes of their end.
			lines := int64(kubecontainer.MaxContainerTerminationMessageLogLines)
			var buf bytes.Buffer
			if err := readCRILog(context.Background(), logPath, &crilogs.LogOptions{TailLines: &lines}, nil, &buf); err != nil {
				return fmt.Sprintf("Error on reading termination message from logs: %v", err)
			}
			data := buf.Bytes()
			if n := kubecontainer.MaxContainerTerminationMessageLogLength; len(data) > n {
				data = data[len(data)-n:]
			}
			msg = string(data)
		}
	}
	// The pod's messages share MaxPodTerminationMessageLogLength.
	perContainer := kubecontainer.MaxPodTerminationMessageLogLength
	if n := len(pod.Spec.Containers) + len(pod.Spec.InitContainers); n > 0 {
		perContainer /= n
	}
	if len(msg) > perContainer {
		msg = msg[:perContainer]
	}
	return msg
}

// lastLines is the end of data holding at most n lines (a final newline
// does not start a line).
func lastLines(data []byte, n int) []byte {
	end := len(data)
	if end > 0 && data[end-1] == '\n' {
		end--
	}
	start := end
	for i := 0; i < n; i++ {
		j := bytes.LastIndexByte(data[:start], '\n')
		if j < 0 {
			return data
		}
		start = j
	}
	return data[start+1:]
}

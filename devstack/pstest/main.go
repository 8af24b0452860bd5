// Command pstest serves Google's in-memory Pub/Sub fake (cloud.google.com/go/pubsub/pstest)
// over gRPC on a free localhost port and prints its address on the first line of stdout.
// Debian ships the fake as source (golang-google-cloud-dev); the Makefile copies it into .build/,
// applies pstest.patch (7-day retention as in Cloud Pub/Sub, an exported clock hook) and builds
// this file against it.
//
// With -clock-control (tests only), each line "advance <duration>" on stdin moves the fake's
// clock forward (publish times, retention, ack deadlines) and is answered "clock <time>".
package main

import (
	"bufio"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"cloud.google.com/go/pubsub/pstest"
)

func main() {
	clockControl := flag.Bool("clock-control", false, "advance the clock by commands on stdin")
	flag.Parse()
	srv := pstest.NewServer()
	fmt.Println(srv.Addr)
	if *clockControl {
		go controlClock()
	}
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGINT, syscall.SIGTERM)
	<-stop
	srv.Close()
}

func controlClock() {
	var mu sync.Mutex
	var offset time.Duration
	pstest.SetTimeNowFunc(func() time.Time {
		mu.Lock()
		defer mu.Unlock()
		return time.Now().Add(offset)
	})
	lines := bufio.NewScanner(os.Stdin)
	for lines.Scan() {
		fields := strings.Fields(lines.Text())
		if len(fields) != 2 || fields[0] != "advance" {
			fmt.Println("error: expected: advance <duration>")
			continue
		}
		d, err := time.ParseDuration(fields[1])
		if err != nil {
			fmt.Println("error:", err)
			continue
		}
		mu.Lock()
		offset += d
		mu.Unlock()
		fmt.Println("clock", time.Now().Add(offset).UTC().Format(time.RFC3339))
	}
}

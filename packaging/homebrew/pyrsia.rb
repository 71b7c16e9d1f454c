# Homebrew formula for pyrsia: the single-file release binary plus shell completions.
#
# A release publishes dist/pyrsia built on each platform as
#   pyrsia-VERSION-darwin-arm64, pyrsia-VERSION-darwin-x86_64, pyrsia-VERSION-linux-x86_64
# with completions.tar.gz (the completions/ directory). Replace each sha256 with
# `shasum -a 256 FILE` of the published asset when cutting a release.
class Pyrsia < Formula
  desc "Decentralized package network for Docker images and Maven artifacts"
  homepage "https://github.com/pyrsia/pyrsia"
  version "0.1.0"
  license "Apache-2.0"

  base = "https://github.com/pyrsia/pyrsia/releases/download/v#{version}"
  on_macos do
    on_arm do
      url "#{base}/pyrsia-#{version}-darwin-arm64"
      sha256 "0000000000000000000000000000000000000000000000000000000000000000"
    end
    on_intel do
      url "#{base}/pyrsia-#{version}-darwin-x86_64"
      sha256 "0000000000000000000000000000000000000000000000000000000000000000"
    end
  end
  on_linux do
    url "#{base}/pyrsia-#{version}-linux-x86_64"
    sha256 "0000000000000000000000000000000000000000000000000000000000000000"
  end

  resource "completions" do
    url "https://github.com/pyrsia/pyrsia/releases/download/v0.1.0/completions.tar.gz"
    sha256 "0000000000000000000000000000000000000000000000000000000000000000"
  end

  def install
    bin.install Dir["pyrsia-*"].first => "pyrsia"
    resource("completions").stage do
      bash_completion.install "pyrsia.bash" => "pyrsia"
      zsh_completion.install "_pyrsia"
      fish_completion.install "pyrsia.fish"
    end
  end

  service do
    run [opt_bin/"pyrsia", "daemon", "--home", var/"pyrsia"]
    keep_alive true
    log_path var/"log/pyrsia.log"
    error_log_path var/"log/pyrsia.log"
  end

  test do
    assert_match "pyrsia #{version}", shell_output("#{bin}/pyrsia --version")
  end
end
